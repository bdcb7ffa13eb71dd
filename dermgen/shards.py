"""Shard layout, commit and read-back.

Layout under a run's root::

    run.json                                   run provenance and the plan binding
    summary.json                               per-entry targets, kept counts, shortfalls
    shards/<shard_id>.parquet                  one row per sample; its presence = the shard is committed
    images/<kept|dropped>/<label>/<sample_id>.<attempt>.png

An attempt writes its PNGs under its own attempt id, then commits with one atomic create-if-absent of
the Parquet object. A losing or dead attempt's PNGs are orphans that `sweep_orphans` removes.
"""

from __future__ import annotations

import io
import logging
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from dermgen.errors import StoreError
from dermgen.schema import SHARD_SCHEMA
from dermgen.store import Store

log = logging.getLogger(__name__)

SHARDS_PREFIX = "shards/"
IMAGES_PREFIX = "images/"
RUN_JSON = "run.json"
SUMMARY_JSON = "summary.json"


def shard_key(shard_id: str) -> str:
    return f"{SHARDS_PREFIX}{shard_id}.parquet"


def image_key(sample_id: str, label: str, attempt_id: str, kept: bool) -> str:
    return f"{IMAGES_PREFIX}{'kept' if kept else 'dropped'}/{label}/{sample_id}.{attempt_id}.png"


def rows_to_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)


def table_to_parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=64, write_statistics=True)
    return buf.getvalue()


@dataclass
class CommitResult:
    shard_id: str
    committed: bool  # False: another attempt had already committed this shard


COMMIT_TRIES = 5


def commit_shard(
    store: Store, shard_id: str, rows: list[dict], written_images: Iterable[str]
) -> CommitResult:
    """Commit a shard's rows atomically; on losing the race, delete this attempt's own PNGs.

    "Not created" is only taken as a lost race once another attempt's object is seen in its place: our
    own object there means the answer to our write was lost; no object at all (S3's 409
    ConditionalRequestConflict, a winner deleted since) means try again.
    """
    data = table_to_parquet(rows_to_table(rows))
    key = shard_key(shard_id)
    for attempt in range(COMMIT_TRIES):
        if attempt:
            time.sleep(random.uniform(0, 0.1 * 2**attempt))  # a conflicting request may still be running
        if store.put_if_absent(key, data):
            return CommitResult(shard_id, True)
        try:
            existing = store.get(key)
        except KeyError:
            log.info("shard %s: conditional write refused but no object is there; retrying", shard_id)
            continue
        if existing == data:  # every attempt's Parquet is unique (attempt ids, timestamps)
            log.info(
                "shard %s: the commit's answer was lost, but the stored object is this attempt's", shard_id
            )
            return CommitResult(shard_id, True)
        log.info("shard %s was already committed by another attempt; discarding this attempt", shard_id)
        for image in written_images:
            store.delete(image)
        return CommitResult(shard_id, False)
    raise StoreError(
        f"shard {shard_id}: commit refused {COMMIT_TRIES} times with no object at {store.url(key)}"
    )


def committed_shard_ids(store: Store) -> set[str]:
    out = set()
    for key in store.list(SHARDS_PREFIX):
        name = key[len(SHARDS_PREFIX) :]
        if name.endswith(".parquet") and "/" not in name:
            out.add(name[: -len(".parquet")])
    return out


def read_shard(store: Store, shard_id: str, columns: list[str] | None = None) -> pa.Table:
    data = store.get(shard_key(shard_id))
    return pq.read_table(io.BytesIO(data), columns=columns, schema=SHARD_SCHEMA if columns is None else None)


def iter_shard_tables(store: Store, columns: list[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
    for shard_id in sorted(committed_shard_ids(store)):
        yield shard_id, read_shard(store, shard_id, columns)


def read_rows(store: Store, columns: list[str] | None = None) -> pa.Table:
    """All committed rows (choose `columns` to leave the image bytes behind)."""
    tables = [t for _, t in iter_shard_tables(store, columns)]
    if not tables:
        schema = SHARD_SCHEMA if columns is None else pa.schema([SHARD_SCHEMA.field(c) for c in columns])
        return schema.empty_table()
    return pa.concat_tables(tables)


def referenced_images(store: Store) -> set[str]:
    refs: set[str] = set()
    for _, table in iter_shard_tables(store, ["image"]):
        for img in table.column("image").to_pylist():
            if img and img.get("path"):
                refs.add(img["path"])
    return refs


def sweep_orphans(store: Store, dry_run: bool = False) -> list[str]:
    """Delete PNGs that no committed shard references (dead or losing attempts). Returns their keys.

    Only safe when no attempt is still running: the runner calls it after the last shard is done.
    """
    refs = referenced_images(store)
    orphans = [k for k in store.list(IMAGES_PREFIX) if k.endswith(".png") and k not in refs]
    if not dry_run:
        for key in orphans:
            store.delete(key)
    if orphans:
        log.info(
            "%s %d orphaned image(s) from unfinished attempts",
            "found" if dry_run else "removed",
            len(orphans),
        )
    return orphans
