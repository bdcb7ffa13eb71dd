"""Loaders read exactly a run's committed shards: strays are ignored with one warning, a shard that is gone
is warned about (or raises with strict=True), a duplicate sample_id raises, and with verify_images=True an
image whose bytes no longer match its image_sha256 raises."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from dermgen.data.runs import open_run, shard_files
from dermgen.data.torch_dataset import RunDataset, RunIterableDataset
from dermgen.errors import StoreError
from dermgen.rundir import RunDir, shard_key
from dermgen.shards import table_to_parquet
from dermgen.store import LocalStore


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst)
    return dst


def first_shard(run: Path) -> str:
    return RunDir(LocalStore(run)).shard_ids()[0]


def test_a_shard_copied_beside_itself_is_ignored_with_one_warning(run, caplog):
    n = len(RunDataset(run))
    sid = first_shard(run)
    shutil.copy(run / shard_key(sid), run / "shards" / f"{sid} (copy).parquet")
    (run / "shards" / "old").mkdir()
    shutil.copy(run / shard_key(sid), run / "shards" / "old" / f"{sid}.parquet")
    with caplog.at_level(logging.WARNING, logger="dermgen.data.runs"):
        assert len(RunDataset(run)) == n
        assert len(list(RunIterableDataset(run, output="dict"))) == n
    warnings = [r for r in caplog.records if "stray" in r.getMessage()]
    assert len(warnings) == 2 and "ignoring 2 stray file(s)" in warnings[0].getMessage()  # one per open
    assert len(shard_files(run)) == len(RunDir(LocalStore(run)).shard_ids())


def test_a_deleted_shard_warns_with_the_count_or_raises_when_strict(run, caplog):
    summary = json.loads((run / "summary.json").read_text())
    assert summary["committed_shards"]
    sid = first_shard(run)
    rows = RunDir(LocalStore(run)).read_shard(sid, ["sample_id"]).num_rows
    n = len(RunDataset(run))
    (run / shard_key(sid)).unlink()
    with caplog.at_level(logging.WARNING, logger="dermgen.data.runs"):
        assert len(RunDataset(run)) == n - rows
    assert "1 shard(s) listed in summary.json are missing" in caplog.text
    with pytest.raises(StoreError, match="1 shard\\(s\\) listed in summary.json are missing"):
        RunDataset(run, strict=True)


def test_a_duplicate_sample_id_raises(run):
    sid = first_shard(run)
    entry, start, end = sid.rsplit("-", 2)
    far = f"{entry}-{int(start) + 9000000:07d}-{int(end) + 9000000:07d}"
    table = RunDir(LocalStore(run)).read_shard(sid)
    rows = [dict(r, shard_id=far) for r in table.to_pylist()]  # same sample ids under another shard name
    (run / shard_key(far)).write_bytes(table_to_parquet(table.from_pylist(rows, table.schema)))
    with pytest.raises(StoreError, match="is in shard .* and again in"):
        RunDataset(run)
    with pytest.raises(StoreError, match="and again in"):
        open_run(run).check_rows()


def test_verify_images_checks_each_images_sha256(run):
    sid = first_shard(run)
    table = RunDir(LocalStore(run)).read_shard(sid)
    rows = table.to_pylist()
    rows[0]["image_sha256"] = "0" * 64  # the bytes no longer match the recorded hash
    (run / shard_key(sid)).write_bytes(table_to_parquet(table.from_pylist(rows, table.schema)))
    assert len(list(RunDataset(run, output="dict"))) > 0  # not checked unless asked
    ds = RunDataset(run, output="dict", verify_images=True)
    with pytest.raises(StoreError, match="does not match its image_sha256"):
        [ds[i] for i in range(len(ds))]
    with pytest.raises(StoreError, match="does not match its image_sha256"):
        list(RunIterableDataset(run, output="dict", verify_images=True))


def test_hf_datasets_reads_exactly_the_committed_shards(run, tmp_path):
    import datasets

    sid = first_shard(run)
    shutil.copy(run / shard_key(sid), run / "shards" / f"{sid} (copy).parquet")
    ds = datasets.load_dataset(
        "parquet", data_files=shard_files(run), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert len(ds) == 16
