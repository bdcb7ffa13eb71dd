"""PyTorch datasets over runs: outputs, transforms, and the worker x rank split of the streaming dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dermgen.data.runs import Unit
from dermgen.data.torch_dataset import (
    DecodedCache,
    RunDataset,
    RunIterableDataset,
    assign_units,
    distributed_info,
)
from dermgen.data.transforms import eval_transform
from dermgen.errors import ConfigError


def test_map_dataset_on_generated_run(tiny_run):
    ds = RunDataset(tiny_run)
    assert len(ds) == 16
    img, label = ds[0]
    assert isinstance(img, Image.Image) and img.size == (64, 64) and img.mode == "RGB"
    assert label == ds.records[0]["label_id"]
    assert sorted(set(ds.labels)) == [0, 1]
    assert ds[-1][1] == ds.labels[-1]
    with pytest.raises(IndexError):
        ds[16]


def test_map_dataset_dict_output_tensor_and_metadata(tiny_run):
    ds = RunDataset(tiny_run, output="dict", image_format="tensor", metadata_columns=["sampler", "steps"])
    item = ds[3]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert item["label_name"] == ds.records[3]["label"]
    assert item["sampler"] == ds.records[3]["sampler"] and item["steps"] == ds.records[3]["steps"]
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 64, 64) and len(batch["sample_id"]) == 4


def test_transform_and_filters_apply(tiny_run):
    ds = RunDataset(tiny_run, transform=eval_transform(32), where={"label": "malignant"})
    assert len(ds) == sum(1 for r in RunDataset(tiny_run).records if r["label"] == "malignant") > 0
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y == 1
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0  # normalised with mean = std = 0.5


def test_map_dataset_bytes_match_the_png_objects(tiny_run):
    ds = RunDataset(tiny_run, cache_row_groups=0)
    for i in (0, 7, 15):
        assert ds.image_bytes(i) == (tiny_run / ds.records[i]["image_path"]).read_bytes()


def test_preload_and_cached_decoding_give_the_same_items(packed_run):
    plain = RunDataset(packed_run, transform=eval_transform(48))
    cached = DecodedCache(RunDataset(packed_run, cache_row_groups=None).preload(), 48).with_format(
        transform=eval_transform(48)
    )
    for i in (0, 33, 119):
        a, ya = plain[i]
        b, yb = cached[i]
        assert ya == yb and torch.equal(a, b)


def _collect(ds, num_workers: int) -> list[str]:
    ids: list[str] = []
    for batch in DataLoader(ds, batch_size=4, num_workers=num_workers):
        ids.extend(batch["sample_id"])
    return ids


@pytest.mark.parametrize("equalize", [True, False])
def test_iterable_two_workers_two_ranks_no_duplicates(packed_run, equalize):
    per_rank = []
    for rank in (0, 1):
        ds = RunIterableDataset(
            packed_run,
            output="dict",
            transform=eval_transform(16),
            rank=rank,
            world_size=2,
            equalize_ranks=equalize,
            shuffle=True,
            seed=3,
        )
        ids = _collect(ds, num_workers=2)
        assert len(ids) == len(ds)
        per_rank.append(ids)
    everything = per_rank[0] + per_rank[1]
    assert len(everything) == len(set(everything)), "a row reached two workers"
    all_ids = {r["sample_id"] for r in RunDataset(packed_run).records}
    assert set(everything) <= all_ids
    if equalize:
        assert len(per_rank[0]) == len(per_rank[1])
    else:
        assert set(everything) == all_ids  # 8 shards of 15 rows: every row, exactly once


def test_iterable_uneven_rows_are_trimmed_to_equal_rank_totals(crafted_run, crafted_selected):
    # units: e1 (4 rows), e2 (4), e3 rg0 (64), e3 rg1 (6) -> rank totals 68 / 10 before trimming
    sizes = []
    seen: set[str] = set()
    for rank in (0, 1):
        ds = RunIterableDataset(crafted_run, output="dict", rank=rank, world_size=2)
        ids = []
        for item in ds:
            ids.append(item["sample_id"])
        sizes.append(len(ids))
        assert not seen & set(ids)
        seen |= set(ids)
    assert sizes[0] == sizes[1] == 10
    untrimmed = [
        len(list(RunIterableDataset(crafted_run, rank=r, world_size=2, equalize_ranks=False))) for r in (0, 1)
    ]
    assert sum(untrimmed) == crafted_selected


def test_iterable_shuffle_is_seeded_and_changes_with_epoch(packed_run):
    def order(seed, epoch):
        ds = RunIterableDataset(packed_run, output="dict", shuffle=True, seed=seed, shuffle_buffer=32)
        ds.set_epoch(epoch)
        ds.formatter.image = lambda data: 0  # skip decoding: only the order matters here
        return [item["sample_id"] for item in ds]

    a = order(1, 0)
    assert a == order(1, 0)
    assert a != order(1, 1) and sorted(a) == sorted(order(1, 1))
    assert a != order(2, 0)
    labels = [s.split("-")[0] for s in a[:30]]
    assert len(set(labels)) == 2, "the shuffle buffer should mix row groups of both labels"


def test_iterable_reads_rank_from_env(monkeypatch, packed_run):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert distributed_info() == (1, 4)
    ds = RunIterableDataset(packed_run)
    assert (ds.rank, ds.world_size) == (1, 4) and len(ds) == 30
    with pytest.raises(ConfigError, match="rank"):
        distributed_info(rank=4, world_size=4)


@pytest.mark.parametrize("world,workers", [(1, 1), (1, 3), (2, 2), (3, 2), (4, 1)])
def test_assign_units_is_a_partition(world, workers):
    rng = np.random.default_rng(world * 10 + workers)
    units = [
        Unit(f"s{i:02d}", 0, tuple(range(int(n))), tuple(range(int(n))))
        for i, n in enumerate(rng.integers(1, 40, 13))
    ]
    for shuffle in (False, True):
        split = assign_units(
            units, world_size=world, num_workers=workers, shuffle=shuffle, seed=5, equalize_ranks=False
        )
        flat = [u.shard_id for rank in split for share in rank for u in share.units]
        assert sorted(flat) == sorted(u.shard_id for u in units)
        eq = assign_units(units, world_size=world, num_workers=workers, shuffle=shuffle, seed=5)
        totals = [sum(s.quota for s in rank) for rank in eq]
        assert len(set(totals)) == 1
        assert all(0 <= s.quota <= s.rows for rank in eq for s in rank)
        if world == 1:
            assert totals[0] == sum(len(u) for u in units)


def test_random_access_without_preload_warns_once(crafted_run, caplog):
    ds = RunDataset(crafted_run, where={"entry_id": ["e3", "e2"]}, cache_row_groups=1)
    order = [i for _ in range(100) for i in (0, len(ds) - 1, 5)]  # alternate row groups: every read misses
    with caplog.at_level("WARNING", logger="dermgen.data.torch_dataset"):
        for i in order:
            ds.image_bytes(i)
    assert sum("missed the row-group cache" in r.message for r in caplog.records) == 1
    caplog.clear()
    ds = RunDataset(crafted_run, where={"entry_id": ["e3", "e2"]}).preload()
    with caplog.at_level("WARNING", logger="dermgen.data.torch_dataset"):
        for i in order:
            ds.image_bytes(i)
    assert not caplog.records and len(ds._cache) == 3
