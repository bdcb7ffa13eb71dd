"""The plan of the shipped 6k manifest, pinned: runs already on disk were bound to exactly this plan.

Shard ids, and for every sample its id, seed, sampler and steps, are serialised canonically and hashed;
a few spot values make a failure readable. Any change to planning that moves one of them breaks resuming
existing runs, so a new planning rule must come as a new plan version, leaving this one (v1) as it is.
"""

import hashlib
import json

import pytest

from dermgen.config import REPO_ROOT
from dermgen.manifest import load_manifest
from dermgen.plan import plan_run

PLAN_SHA256 = "5c2e2d78d81e9b5c7b27aeb35f60eed9fbaf150b674d72eecac6ce0c8c319a71"
SHARD_IDS_SHA256 = "59d66840b3a1ef2c89ba96487a69cddada8dbe7a48805107fcc1afe2779b7db0"
SPOTS = {  # sample_id -> (seed, sampler, steps)
    "benign_mole-0000000": (1217631442, "Euler a", 21),
    "benign_mole-0000009": (1217631451, "Euler a", 21),
    "benign_mole-0000063": (1217631505, "PLMS", 26),
    "benign_skin_mole-0000064": (782232766, "PLMS", 22),
    "benign_skin_mole-0000073": (782232775, "Euler a", 22),
    "benign_skin_mole-0000127": (782232829, "Euler a", 20),
    "malignant_mole_neck-0000576": (2117340373, "Euler", 20),
    "malignant_mole_neck-0000585": (2117340382, "Euler", 25),
    "malignant_mole_neck-0000599": (2117340396, "Euler", 25),
}


def canonical(plan) -> bytes:
    rows = [
        [sh.shard_id, [[s.sample_id, s.seed, s.sampler, s.steps] for s in sh.samples]] for sh in plan.shards
    ]
    return json.dumps(rows, separators=(",", ":")).encode()


def test_the_6k_plan_is_pinned():
    plan = plan_run(load_manifest(REPO_ROOT / "manifests" / "derm_t2im_6k.yaml"))
    ids = [sh.shard_id for sh in plan.shards]
    assert len(ids) == 96 and sum(len(sh) for sh in plan.shards) == 6000
    assert ids[0] == "benign_mole-0000000-0000064" and ids[-1] == "malignant_mole_neck-0000576-0000600"
    samples = {s.sample_id: (s.seed, s.sampler, s.steps) for sh in plan.shards for s in sh.samples}
    assert {k: samples[k] for k in SPOTS} == SPOTS
    assert hashlib.sha256(json.dumps(ids).encode()).hexdigest() == SHARD_IDS_SHA256
    assert hashlib.sha256(canonical(plan)).hexdigest() == PLAN_SHA256


V2_PLAN_SHA256 = {  # block (= batch size) -> sha256 of canonical(plan); the shard ids are v1's
    8: "bd8698409524065de3f501e0c6e9b557fa6de4be4559900a58710832b5fd6418",
    16: "c905e82a3899f76c67a10ac3a47dfec4cfedc415af4061a84d4c8086616ac25e",
}
V2_SPOTS = {  # block -> sample_id -> (seed, sampler, steps)
    8: {
        "benign_mole-0000000": (1217631442, "Euler a", 24),
        "benign_mole-0000009": (1217631451, "Euler a", 20),
        "benign_mole-0000063": (1217631505, "Euler a", 21),
        "malignant_mole_neck-0000599": (2117340396, "Euler", 22),
    },
    16: {
        "benign_mole-0000000": (1217631442, "Euler a", 24),
        "benign_mole-0000009": (1217631451, "Euler a", 24),
        "benign_mole-0000063": (1217631505, "PLMS", 24),
        "malignant_mole_neck-0000599": (2117340396, "Euler a", 26),
    },
}


@pytest.mark.parametrize("block", [8, 16])
def test_the_6k_plan_v2_is_pinned(block):
    plan = plan_run(load_manifest(REPO_ROOT / "manifests" / "derm_t2im_6k.yaml"), block=block, version=2)
    ids = [sh.shard_id for sh in plan.shards]
    assert hashlib.sha256(json.dumps(ids).encode()).hexdigest() == SHARD_IDS_SHA256
    samples = {s.sample_id: (s.seed, s.sampler, s.steps) for sh in plan.shards for s in sh.samples}
    assert {k: samples[k] for k in V2_SPOTS[block]} == V2_SPOTS[block]
    assert hashlib.sha256(canonical(plan)).hexdigest() == V2_PLAN_SHA256[block]
