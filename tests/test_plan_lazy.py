"""Lazily derived samples are the ones the eager planner produced, and entry lookup is a dict lookup.

The hashes below were computed with the eager planner (every Sample built at plan time) before shards
derived their samples on demand; they cover every shipped manifest, both plan versions, limits, sizes,
shard sizes, run seeds and the first top-up shards.
"""

import hashlib
import json
import pickle

import pytest

from dermgen.config import REPO_ROOT
from dermgen.manifest import load_manifest, parse_manifest
from dermgen.plan import make_sample, plan_run

KWARGS = {
    "default": {},
    "v2b16": {"version": 2, "block": 16},
    "v2-limit": {"version": 2, "block": 8, "limit": 50, "size": 256, "shard_size": 10, "run_seed": 7},
    "v1-limit": {"version": 1, "limit": 777, "shard_size": 33, "run_seed": 3},
}
EAGER_SHA256 = {
    ("derm_t2im_6k.yaml", "default"): "555a7761407a8e5766ed98dce282bd9d41d5c409c07ce93718c484ef7aa284c9",
    ("derm_t2im_6k.yaml", "v2b16"): "7eb2ac6452e0972e06f1f227e5b161094890dda09ac88f87013815c00608bab7",
    ("derm_t2im_6k.yaml", "v2-limit"): "0180746eae7df6b429782179066fa4007be7c25cc2fd82eb913e58796399b819",
    ("derm_t2im_6k.yaml", "v1-limit"): "5097b764b836db30aed644fa9e99632caeabbdc0c67c2c020d78d3cf283bf0fe",
    (
        "smart_transformations.yaml",
        "default",
    ): "e868ef6e6e72b683f334b8d08577dadeb7b5c2f84dbe0ac627a7812061f611b1",
    (
        "smart_transformations.yaml",
        "v2b16",
    ): "6019519af251eb879af47797f8e9967a6b8c8500ca2b489c1747fcb81a0d3b47",
    (
        "smart_transformations.yaml",
        "v2-limit",
    ): "b4ce6e9fb90206ff8f3658eb591387418ac13f26f9764748308732defc75ce31",
    (
        "smart_transformations.yaml",
        "v1-limit",
    ): "ce7898e655c43001113ccaee6489a7dba5c9a3c56d8ea0a1c9db922c7bb320de",
    ("smoke.yaml", "default"): "500b3e0b1517aab0f8cc6026eefcc9a5aaa56121a63b6ebe7be30c99d7d59112",
    ("smoke.yaml", "v2b16"): "5052abd28db521398173c8e59935bc5f67a4f55a610964cb59a5a7e119426392",
    ("smoke.yaml", "v2-limit"): "f3acb13a5b42a8543d3333a4d63d9f63417b9d0682e27903e8f83cde34368363",
    ("smoke.yaml", "v1-limit"): "eeea0a4fb22ae44722f196c21a755c9e323298a89f14c853b2e228462dceaf00",
}


def _rows(samples):
    return [[s.sample_id, s.seed, s.sampler, s.steps] for s in samples]


def canonical(plan) -> bytes:
    """Every field of every sample of the base shards, then the first top-up shard of 3 entries."""
    rows = [
        [
            sh.shard_id,
            sh.topup,
            [
                [s.sample_id, s.seed, s.sampler, s.steps, s.width, s.height, s.prompt]
                + [s.loras, s.tags, s.skin_tones]
                for s in sh.samples
            ],
        ]
        for sh in plan.shards
    ]
    tops = []
    for entry_id in list(plan.targets)[:3]:
        t = plan.topup_shard(entry_id, plan.targets[entry_id])
        if t:
            tops.append([t.shard_id, _rows(t.samples)])
    return json.dumps(rows, separators=(",", ":")).encode() + json.dumps(tops).encode()


@pytest.mark.parametrize("manifest_name,kw", sorted(EAGER_SHA256))
def test_lazy_samples_equal_the_eager_plan(manifest_name, kw):
    plan = plan_run(load_manifest(REPO_ROOT / "manifests" / manifest_name), **KWARGS[kw])
    assert hashlib.sha256(canonical(plan)).hexdigest() == EAGER_SHA256[(manifest_name, kw)]


@pytest.mark.parametrize("kw", sorted(KWARGS))
def test_shard_samples_equal_make_sample_one_by_one(kw):
    """The per-entry SampleRule derives exactly what the reference `make_sample` builds field by field."""
    args = {"run_seed": 0, "block": 8, "size": None, "version": 1, **KWARGS[kw]}
    plan = plan_run(load_manifest(REPO_ROOT / "manifests" / "smart_transformations.yaml"), **KWARGS[kw])
    for shard in plan.shards:
        entry = plan.entry(shard.entry_id)
        start = None if args["version"] == 1 else shard.start
        eager = [
            make_sample(entry, i, args["run_seed"], args["block"], args["size"], start)
            for i in range(shard.start, shard.end)
        ]
        assert list(shard.samples) == eager
        assert shard.samples == shard.samples  # derived again, the same


def test_a_shard_crosses_process_boundaries_without_its_samples():
    plan = plan_run(load_manifest(REPO_ROOT / "manifests" / "derm_t2im_6k.yaml"), version=2, block=16)
    shard = plan.shards[5]
    data = pickle.dumps(shard)
    assert len(data) < 4096  # the entry and a range, not 64 samples
    again = pickle.loads(data)
    assert again.shard_id == shard.shard_id and again.samples == shard.samples and again == shard


def test_shards_share_one_rule_per_entry():
    plan = plan_run(load_manifest(REPO_ROOT / "manifests" / "derm_t2im_6k.yaml"))
    rules = {id(sh.rule) for sh in plan.shards}
    assert len(rules) == len(plan.manifest.entries)
    topup = plan.topup_shard("benign_mole", plan.targets["benign_mole"])
    assert topup.rule is plan.shards[0].rule


def _many_entries(n):
    return parse_manifest(
        {
            "name": "many",
            "entries": [
                {"id": f"e{i}", "label": "benign", "prompt": "benign mole", "count": 1} for i in range(n)
            ],
        }
    )


def test_entry_lookup_is_a_dict_lookup():
    manifest = _many_entries(2000)
    plan = plan_run(manifest)
    assert plan.entry("e1999") is manifest.entries[-1] and plan.entry("e0") is manifest.entries[0]
    with pytest.raises(KeyError):
        plan.entry("nope")
    # O(1): once planned, a lookup never walks the entry list (here a list that refuses to be walked)

    class NoScan(list):
        def __iter__(self):
            raise AssertionError("entry lookup scanned the manifest's entries")

    manifest.__dict__["entries"] = NoScan(manifest.entries)
    assert [plan.entry(f"e{i}").id for i in (0, 777, 1999)] == ["e0", "e777", "e1999"]
    assert plan.topup_shard("e5", 1).entry_id == "e5"
    assert plan.shards_by_entry() == {f"e{i}": 1 for i in range(2000)}
