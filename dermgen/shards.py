"""Shard commit: rows -> one Parquet object, created atomically; its presence = the shard is committed.

An attempt writes its PNGs under its own attempt id, then commits with one atomic create-if-absent of
the Parquet object. A losing attempt deletes its own PNGs; a dead attempt's PNGs are orphans that
`dermgen.rundir.RunDir.sweep_orphans` removes. The key layout and all reading live in `dermgen.rundir`.
"""

from __future__ import annotations

import io
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from dermgen.errors import StoreError
from dermgen.rundir.layout import RUN_JSON, SUMMARY_JSON, image_key, shard_key
from dermgen.schema import SHARD_SCHEMA, check_row
from dermgen.store import Store

log = logging.getLogger(__name__)

__all__ = ["RUN_JSON", "SUMMARY_JSON", "CommitResult", "commit_shard", "image_key", "shard_key"]


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Rows -> a table of the one shard schema; every row checked against it first."""
    return pa.Table.from_pylist([check_row(r) for r in rows], schema=SHARD_SCHEMA)


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
