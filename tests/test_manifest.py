from pathlib import Path

import pytest

from dermgen.errors import ConfigError
from dermgen.manifest import load_manifest, manifest_hash, parse_manifest

REPO = Path(__file__).resolve().parent.parent


def test_shipped_6k_manifest_is_the_study_dataset():
    m = load_manifest(REPO / "manifests" / "derm_t2im_6k.yaml")
    assert m.counts_by_label() == {"benign": 3000, "malignant": 3000}
    prompts = {e.prompt for e in m.entries}
    assert {"benign mole", "malignant mole", "malignant mole on neck"} <= prompts
    for e in m.entries:
        assert set(e.samplers) == {"Euler", "Euler a", "PLMS"}
        assert e.steps_bounds == (20, 26)
        assert e.cfg_scale == 7
        assert e.width_height == (512, 512)


def test_smart_transformations_and_smoke_manifests_validate():
    smart = load_manifest(REPO / "manifests" / "smart_transformations.yaml")
    tags = {t for e in smart.entries for t in e.tags}
    assert {"tiny", "large", "multiple", "skin_tone"} <= tags
    smoke = load_manifest(REPO / "manifests" / "smoke.yaml")
    assert smoke.model == "tiny" and smoke.total == 8


def test_defaults_merge_and_entry_overrides():
    m = parse_manifest(
        {
            "name": "x",
            "defaults": {"samplers": ["PLMS"], "steps": 22, "size": 256},
            "entries": [
                {"id": "a", "label": "benign", "prompt": "benign mole", "count": 3},
                {
                    "id": "b",
                    "label": "malignant",
                    "prompt": "malignant mole",
                    "count": 2,
                    "steps": "20-24",
                    "size": "512x384",
                    "samplers": "Euler a",
                },
            ],
        }
    )
    a, b = m.entries
    assert a.samplers == ["PLMS"] and a.steps_bounds == (22, 22) and a.width_height == (256, 256)
    assert b.samplers == ["Euler a"] and b.steps_bounds == (20, 24) and b.width_height == (512, 384)


def test_manifest_hash_ignores_formatting_but_not_content():
    base = {"name": "x", "entries": [{"id": "a", "label": "benign", "prompt": "p", "count": 1}]}
    h1 = manifest_hash(parse_manifest(base))
    h2 = manifest_hash(parse_manifest({"entries": base["entries"], "name": "x"}))
    changed = {"name": "x", "entries": [{"id": "a", "label": "benign", "prompt": "p", "count": 2}]}
    assert h1 == h2 != manifest_hash(parse_manifest(changed))


def test_error_names_field_value_and_expectation():
    with pytest.raises(ConfigError) as exc:
        parse_manifest(
            {"name": "x", "entries": [{"id": "a", "label": "benign", "prompt": "p", "count": 0}]},
            source="m.yaml",
        )
    assert str(exc.value) == "m.yaml: entries[0].count: Input should be greater than 0 (got 0)"


def test_paused_gc_restores_the_collector_and_freezes_only_large_builds():
    import gc

    from dermgen.manifest import paused_gc

    assert gc.isenabled()
    with pytest.raises(ValueError), paused_gc():
        assert not gc.isenabled()
        raise ValueError
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    with paused_gc():
        kept = [[] for _ in range(100)]
    assert gc.isenabled() and gc.get_freeze_count() == frozen  # a small build: nothing frozen
    with paused_gc(freeze_over=50):
        kept += [[] for _ in range(100)]
    assert gc.isenabled() and gc.get_freeze_count() >= frozen + 100
    gc.unfreeze()
