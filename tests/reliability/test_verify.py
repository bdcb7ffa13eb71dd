"""`dermgen verify` on damaged runs: each kind of damage gives exit code 5 and a line naming the object."""

from __future__ import annotations

import pytest

from dermgen.cli import main
from dermgen.rundir import RunDir, shard_key
from dermgen.schema import SHARD_SCHEMA
from dermgen.shards import table_to_parquet
from dermgen.store import LocalStore, Store

SHARD = "benign_mole-0000000-0000002"
NEXT = "benign_mole-0000002-0000004"


def first_png(store: Store, shard_id: str = SHARD) -> tuple[str, str]:
    row = RunDir(store).read_shard(shard_id, ["sample_id", "image"]).to_pylist()[0]
    return row["image"]["path"], row["sample_id"]


def corrupt_parquet(store: Store) -> tuple[str, str]:
    key = shard_key(SHARD)
    data = store.get(key)
    store.put(key, data[: len(data) // 2])
    return key, "unreadable Parquet"


def delete_png(store: Store) -> tuple[str, str]:
    key, sample_id = first_png(store)
    store.delete(key)
    return key, f"PNG of row {sample_id} is missing"


def tamper_png(store: Store) -> tuple[str, str]:
    key, sample_id = first_png(store)
    data = bytearray(store.get(key))
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the pixel data
    store.put(key, bytes(data))
    return key, f"PNG does not match image_sha256 of row {sample_id}"


def duplicate_row(store: Store) -> tuple[str, str]:
    """A second shard object (a top-up that overlapped, say) holding an already committed sample."""
    rows = RunDir(store).read_shard(SHARD).to_pylist()[1:] + RunDir(store).read_shard(NEXT).to_pylist()[:1]
    dup_id = "benign_mole-0000001-0000003"
    for r in rows:
        r["shard_id"] = dup_id
    import pyarrow as pa

    store.put(shard_key(dup_id), table_to_parquet(pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)))
    return shard_key(dup_id), f"duplicate sample_id {rows[0]['sample_id']} (also in shard {SHARD})"


def drop_shard(store: Store) -> tuple[str, str]:
    """A finished run that lost a whole shard, PNGs included (nothing orphaned points at it)."""
    for r in RunDir(store).read_shard(SHARD, ["image"]).to_pylist():
        store.delete(r["image"]["path"])
    store.delete(shard_key(SHARD))
    return shard_key(SHARD), "planned shard missing although summary.json marks the run finished"


DAMAGE = {
    "corrupt_parquet": corrupt_parquet,
    "delete_png": delete_png,
    "tamper_png": tamper_png,
    "duplicate_row": duplicate_row,
    "drop_shard": drop_shard,
}


def run_verify(uri: str, capsys) -> tuple[int, list[str]]:
    rc = main(["verify", uri])
    out = capsys.readouterr().out
    return rc, [ln for ln in out.splitlines() if ln.startswith("PROBLEM ")]


def test_verify_passes_an_intact_run(run_copy, capsys):
    rc, problems = run_verify(str(run_copy), capsys)
    assert rc == 0 and problems == []


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_verify_names_the_damaged_object(damage, run_copy, capsys):
    key, what = DAMAGE[damage](LocalStore(run_copy))
    rc, problems = run_verify(str(run_copy), capsys)
    print(f"{damage}: exit {rc}, {len(problems)} problem line(s)")
    assert rc == 5
    assert any(ln.startswith(f"PROBLEM {key}: ") and what in ln for ln in problems), problems


def test_verify_on_s3_names_the_tampered_png(s3_run_copy, capsys):
    key, what = tamper_png(s3_run_copy)
    rc, problems = run_verify(s3_run_copy.uri, capsys)
    assert rc == 5
    assert any(ln.startswith(f"PROBLEM {key}: ") and what in ln for ln in problems), problems
