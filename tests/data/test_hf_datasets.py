"""Hugging Face `datasets` reads shards as they are: PIL images, the shard schema's columns."""

from __future__ import annotations

from PIL import Image

from dermgen.schema import SHARD_SCHEMA


def test_load_dataset_parquet_gives_pil_images(tiny_run, tmp_path):
    import datasets

    files = sorted(str(p) for p in (tiny_run / "shards").glob("*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 16
    assert ds.column_names == list(SHARD_SCHEMA.names)
    assert isinstance(ds.features["image"], datasets.Image)
    row = ds[0]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (64, 64)
    assert row["label"] in ("benign", "malignant") and row["kept"] is True
    assert set(row["scores"]) == {f.name for f in SHARD_SCHEMA.field("scores").type}
    kept = ds.filter(lambda r: r["kept"] and r["status"] == "ok")
    assert len(kept) == 16
