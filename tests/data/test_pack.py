"""Packing a folder into a run: shard schema, A1111 parameters parsed, bytes kept."""

from __future__ import annotations

import pyarrow.parquet as pq

from dermgen.data.pack import pack_folder
from dermgen.rundir import RunDir
from dermgen.schema import SHARD_SCHEMA


def test_packed_run_rows(packed_run, samples_dir):
    from dermgen.store import LocalStore

    ids = sorted(RunDir(LocalStore(packed_run)).shard_ids())
    assert len(ids) == 8 and ids[0] == "packed_benign-0000000-0000015"
    table = pq.read_table(packed_run / "shards" / f"{ids[0]}.parquet")
    assert table.schema.equals(SHARD_SCHEMA, check_metadata=False)
    row = table.slice(0, 1).to_pylist()[0]
    first = sorted((samples_dir / "benign").glob("*.png"))[0]
    assert row["image"]["bytes"] == first.read_bytes()
    seed = int(first.stem.split("-")[1])  # file names are NNNNN-SEED.png
    assert row["seed"] == seed and row["sampler"] and row["steps"] >= 20 and row["model_hash"] == "8d72386f9b"
    assert row["kept"] and row["status"] == "ok" and row["label"] == "benign"
    assert (packed_run / row["image"]["path"]).read_bytes() == first.read_bytes()


def test_pack_without_png_objects(samples_dir, tmp_path):
    summary = pack_folder(
        samples_dir, tmp_path / "r", shard_size=64, write_png_objects=False, limit_per_label=3
    )
    assert summary["labels"] == {"benign": 3, "malignant": 3}
    assert not (tmp_path / "r" / "images").exists()
    from dermgen.data.torch_dataset import RunDataset

    assert len(RunDataset(tmp_path / "r")) == 6
