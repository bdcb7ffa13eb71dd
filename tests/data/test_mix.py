"""Mixing sources with ratios: exact counts, determinism, composition, repeats."""

from __future__ import annotations

import pytest

from dermgen.data.mix import counts_for_ratios, mix_datasets
from dermgen.data.real import FolderDataset
from dermgen.data.torch_dataset import RunDataset
from dermgen.errors import ConfigError


def test_counts_for_ratios_sum_to_total():
    assert counts_for_ratios([0.75, 0.25], 100) == [75, 25]
    assert counts_for_ratios([1, 1, 1], 10) == [4, 3, 3]
    assert sum(counts_for_ratios([0.3, 0.3, 0.4], 7)) == 7
    with pytest.raises(ConfigError):
        counts_for_ratios([0, 0], 5)


def test_run_plus_folder_75_25_of_a_total(packed_run, samples_dir):
    syn = RunDataset(packed_run, output="dict")
    real = FolderDataset(samples_dir, output="dict")
    mix = mix_datasets(
        {"synthetic": syn, "real": real}, ratios={"synthetic": 0.75, "real": 0.25}, total=80, seed=7
    )
    comp = mix.composition()
    assert len(mix) == 80 and comp["synthetic"]["count"] == 60 and comp["real"]["count"] == 20
    sources = [r["mix_source"] for r in mix.records]
    assert sources.count("synthetic") == 60
    assert sources[:20].count("real") not in (0, 20)  # interleaved, not blocked
    items = [mix[i] for i in range(0, 80, 9)]
    for i, item in zip(range(0, 80, 9), items, strict=True):
        rec = mix.records[i]
        assert item["sample_id"] == rec["sample_id"] and item["label"] == rec["label_id"]
        assert item["source"] == (str(samples_dir) if rec["mix_source"] == "real" else syn.run.uri)
    ids = [(r["mix_source"], r["sample_id"]) for r in mix.records]
    assert len(set(ids)) == 80  # no repeats


def test_mix_is_deterministic_per_seed(packed_run, samples_dir):
    def ids(seed):
        m = mix_datasets(
            {"s": RunDataset(packed_run), "r": FolderDataset(samples_dir)},
            ratios={"s": 3, "r": 1},
            total=40,
            seed=seed,
        )
        return [(r["mix_source"], r["sample_id"]) for r in m.records]

    assert ids(0) == ids(0)
    assert ids(0) != ids(1)


def test_default_total_uses_every_item_of_the_limiting_source(packed_run, samples_dir):
    real = FolderDataset(samples_dir).subset(range(0, 120, 4))  # 30 items
    mix = mix_datasets({"s": RunDataset(packed_run), "r": real}, ratios={"s": 0.75, "r": 0.25})
    assert mix.counts == {"s": 90, "r": 30}


def test_repeats_only_when_allowed(samples_dir):
    small = FolderDataset(samples_dir).subset([0, 1, 60])
    with pytest.raises(ConfigError, match="3 available|has 3"):
        mix_datasets({"a": small}, counts={"a": 7})
    mix = mix_datasets({"a": small}, counts={"a": 7}, allow_repeats=True)
    ids = [r["sample_id"] for r in mix.records]
    assert len(ids) == 7 and len(set(ids)) == 3 and all(ids.count(i) >= 2 for i in set(ids))
