"""Skin tone in manifests: expect per entry, distribution targets planned across entries."""

from __future__ import annotations

import pytest
from support import REPO_ROOT

from dermgen.errors import ConfigError
from dermgen.manifest import load_manifest, manifest_hash, parse_manifest
from dermgen.plan import plan_run


def manifest(entries, distribution=None):
    data = {"name": "m", "entries": entries}
    if distribution is not None:
        data["distribution"] = distribution
    return parse_manifest(data, "m.yaml")


def entry(id_, label="malignant", count=10, expect=None):
    e = {"id": id_, "label": label, "prompt": "a mole", "count": count}
    if expect is not None:
        e["expect"] = {"skin_tone": expect}
    return e


def test_unknown_group_is_refused_naming_the_field():
    with pytest.raises(ConfigError) as exc:
        manifest([entry("a", expect=["brown", "purple"])])
    msg = str(exc.value)
    assert "entries[0].expect.skin_tone" in msg and "'purple'" in msg and "very_light" in msg


def test_empty_expect_and_unknown_keys_are_refused():
    with pytest.raises(ConfigError, match=r"entries\[0\].expect.skin_tone"):
        manifest([entry("a", expect=[])])
    with pytest.raises(ConfigError, match=r"entries\[0\].expect.colour: unknown key"):
        manifest([{**entry("a"), "expect": {"colour": ["red"]}}])


def test_expect_reaches_every_sample_of_the_entry():
    m = manifest([entry("a", expect=["brown", "dark"]), entry("b")])
    plan = plan_run(m)
    by_entry = {s.entry_id: s for shard in plan.shards for s in shard.samples}
    assert by_entry["a"].skin_tones == ("brown", "dark") and by_entry["b"].skin_tones == ()


def test_distribution_satisfiable_by_the_entries_is_accepted():
    m = manifest(
        [entry("dark", count=25, expect=["brown", "dark"]), entry("any", count=75)],
        [{"label": "malignant", "skin_tone": ["brown", "dark"], "min_fraction": 0.25}],
    )
    assert m.distribution[0].min_fraction == 0.25


def test_distribution_the_entries_cannot_guarantee_is_refused():
    with pytest.raises(ConfigError) as exc:
        manifest(
            # "medium" may land on tan: it does not guarantee brown+dark
            [
                entry("dark", count=20, expect=["dark"]),
                entry("medium", count=20, expect=["tan", "brown"]),
                entry("any", count=60),
            ],
            [{"label": "malignant", "skin_tone": ["brown", "dark"], "min_fraction": 0.25}],
        )
    msg = str(exc.value)
    assert msg.startswith("m.yaml: distribution[0]") and "0.200" in msg and "20 of 100" in msg


def test_distribution_for_a_label_without_entries_and_bad_fraction_are_refused():
    with pytest.raises(ConfigError, match="no benign entry"):
        manifest(
            [entry("a", expect=["dark"])], [{"label": "benign", "skin_tone": ["dark"], "min_fraction": 0.1}]
        )
    with pytest.raises(ConfigError, match=r"distribution\[0\].min_fraction"):
        manifest([entry("a", expect=["dark"])], [{"skin_tone": ["dark"], "min_fraction": 1.5}])


def test_smart_transformations_expects_the_tones_its_prompts_name():
    m = load_manifest(REPO_ROOT / "manifests" / "smart_transformations.yaml")
    for e in m.entries:
        if "dark skin" in e.prompt:
            assert e.expect.skin_tone == ["brown", "dark"]
        elif "light skin" in e.prompt:
            assert e.expect.skin_tone == ["very_light", "light"]
        elif "skin_tone" not in e.tags:
            assert e.expect is None
    assert {d.label for d in m.distribution} == {"benign", "malignant"}


def test_expect_is_part_of_the_manifest_hash():
    plain = manifest([entry("a")])
    assert manifest_hash(manifest([entry("a", expect=["dark"])])) != manifest_hash(plain)


def test_distribution_without_label_counts_every_label():
    entries = [entry("d", "benign", 30, ["dark"]), entry("m", "malignant", 70)]
    m = manifest(entries, [{"skin_tone": ["dark"], "min_fraction": 0.3}])
    assert m.distribution[0].label is None
    with pytest.raises(ConfigError, match=r"distribution\[0\] \(all labels: dark >= 0.31\)"):
        manifest(entries, [{"skin_tone": ["dark"], "min_fraction": 0.31}])


def test_distribution_status_measures_kept_images_and_the_shortfall():
    from dermgen.skintone import distribution_status, tone_counts

    rows = [{"entry_id": "e", "label": "malignant", "status": "ok", "kept": True, "skin_tone": t} for t in
            ["dark"] * 2 + ["light"] * 8]  # fmt: skip
    m = manifest(
        [entry("e", count=10, expect=["dark"])], [{"skin_tone": ["dark", "brown"], "min_fraction": 0.5}]
    )
    (d,) = distribution_status(m, tone_counts(rows))
    assert (d["kept"], d["kept_inside"], d["fraction"], d["met"]) == (10, 2, 0.2, False)
    assert d["shortfall"] == 6  # (2 + 6) / (10 + 6) = 0.5
