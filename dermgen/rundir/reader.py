"""`RunDir`: the one reader (and owner) of a run's on-disk form on a `Store`, local or S3.

Everything that reads a run -- resume, inspect, verify, report, `filter RUN`, preprocess and every loader --
goes through it: run.json as a typed `RunInfo`, the listing sorted into committed shards and strays,
shard tables, rows, shard summaries, the images rows reference, and the orphan sweep, which deletes only
objects of the run's own naming and run_id.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dermgen.errors import StoreError
from dermgen.rundir.claims import ClaimedRanges, read_claims, sweep_stale_claims
from dermgen.rundir.layout import (
    CARD_MD,
    CLAIMS_PREFIX,
    IMAGES_PREFIX,
    RUN_JSON,
    SHARDS_PREFIX,
    SUMMARY_JSON,
    Listing,
    classify,
    parse_image_key,
    shard_key,
)
from dermgen.rundir.model import SUMMARY_COLUMNS, RunInfo, ShardSummary, summarise_shard
from dermgen.rundir.parallel import READ_WORKERS, bounded_map
from dermgen.schema import SHARD_SCHEMA, conform
from dermgen.store import LocalStore, Store, open_store

log = logging.getLogger(__name__)


class RunDir:
    """A run's root on a store. Cheap to make; every read goes to the store (no hidden caching)."""

    def __init__(self, store: Store | str | os.PathLike, what: str = "run") -> None:
        self.store = store if isinstance(store, Store) else open_store(store, what)

    @classmethod
    def open(cls, uri: Store | str | os.PathLike, what: str = "run") -> RunDir:
        """A RunDir for an existing run: StoreError (exit 3) if the folder or bucket is missing."""
        rd = cls(uri, what)
        rd.store.check_readable()
        return rd

    @staticmethod
    def looks_like_run(uri: str | os.PathLike) -> bool:
        """True for an s3:// URI or a local folder holding run.json or shards/ (no store request)."""
        from pathlib import Path

        from dermgen.uri import is_s3

        if is_s3(uri):
            return True
        p = Path(uri)
        return (p / RUN_JSON).is_file() or (p / "shards").is_dir()

    @property
    def uri(self) -> str:
        return self.store.uri

    # -- run.json / summary.json ------------------------------------------------------------------

    def info(self) -> RunInfo:
        """run.json as a RunInfo; StoreError if missing or not a dermgen run.json."""
        try:
            data = self.store.get(RUN_JSON)
        except KeyError:
            raise StoreError(
                f"{self.uri} holds no {RUN_JSON} (not a dermgen run, or nothing written yet)"
            ) from None
        return RunInfo.parse(data, self.uri)

    def info_or_none(self) -> RunInfo | None:
        try:
            data = self.store.get(RUN_JSON)
        except KeyError:
            return None
        return RunInfo.parse(data, self.uri)

    def write_info(self, info: RunInfo, *, create: bool) -> bool:
        """Write run.json; with `create`, only if absent (True if this call created it)."""
        if create:
            return self.store.put_if_absent(RUN_JSON, info.to_bytes())
        self.store.put(RUN_JSON, info.to_bytes())
        return True

    def summary(self) -> dict[str, Any] | None:
        """summary.json (written once a run finishes), or None."""
        try:
            return json.loads(self.store.get(SUMMARY_JSON))
        except KeyError:
            return None
        except ValueError as exc:
            raise StoreError(f"{self.uri}/{SUMMARY_JSON} is not valid JSON ({exc})") from None

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.store.put(SUMMARY_JSON, json.dumps(summary, indent=2, sort_keys=True, default=str).encode())

    # -- listing ----------------------------------------------------------------------------------

    def listing(self) -> Listing:
        return classify(list(self.store.list("")), self.store.temp_files(""))

    def shard_ids(self) -> list[str]:
        """Committed shard ids (well-formed names directly under shards/), sorted."""
        return classify(list(self.store.list("shards/"))).shards

    # -- shards and rows --------------------------------------------------------------------------

    def read_shard(self, shard_id: str, columns: list[str] | None = None, *, raw: bool = False) -> pa.Table:
        """The shard's rows; all columns cast to the shard schema, or as stored with `raw` (verify)."""
        data = self.store.get(shard_key(shard_id))
        if raw:
            return pq.read_table(io.BytesIO(data))
        if columns is not None:  # read only what is asked for (and stored); older shards lack later columns
            stored = set(pq.read_schema(io.BytesIO(data)).names)
            table = pq.read_table(io.BytesIO(data), columns=[c for c in columns if c in stored])
        else:
            table = pq.read_table(io.BytesIO(data))
        return conform(table, columns)

    def parquet_file(self, shard_id: str) -> pq.ParquetFile:
        """An open ParquetFile over the shard object (ranged reads through the store)."""
        return pq.ParquetFile(self.store.open_input(shard_key(shard_id)))

    def iter_tables(
        self, columns: list[str] | None = None, shard_ids: list[str] | None = None, *, workers: int = 1
    ) -> Iterator[tuple[str, pa.Table]]:
        """(shard id, table) per committed shard, in order, one shard at a time: memory stays that of
        `workers` shards however large the run (`workers` > 1 reads ahead in parallel, bounded)."""
        ids = shard_ids if shard_ids is not None else self.shard_ids()
        yield from bounded_map(lambda sid: self.read_shard(sid, columns), ids, workers)

    def rows(self, columns: list[str] | None = None) -> pa.Table:
        """All committed rows (choose `columns` to leave the image bytes behind)."""
        tables = [t for _, t in self.iter_tables(columns)]
        if not tables:
            schema = SHARD_SCHEMA if columns is None else pa.schema([SHARD_SCHEMA.field(c) for c in columns])
            return schema.empty_table()
        return pa.concat_tables(tables)

    def shard_summaries(self, workers: int = READ_WORKERS) -> dict[str, ShardSummary]:
        """Per committed shard its counts; each shard is summarised as it is read (no rows kept), with
        `workers` shards read at once (resume and inspect: one round trip per shard on S3)."""
        cols = list(SUMMARY_COLUMNS)
        summarise = lambda sid: summarise_shard(sid, self.read_shard(sid, cols))  # noqa: E731
        return dict(bounded_map(summarise, self.shard_ids(), workers))

    def referenced_images(self, shard_ids: list[str] | None = None) -> set[str]:
        """Keys of the PNG objects committed rows name (files layout; none in the parquet layout). Only the
        path column is read (ranged reads on S3), never the image bytes."""
        refs: set[str] = set()
        for shard_id in shard_ids if shard_ids is not None else self.shard_ids():
            with self.store.open_input(shard_key(shard_id)) as f:
                col = pq.ParquetFile(f).read(columns=["image.path"]).column("image")
            refs.update(p for img in col.to_pylist() if img and (p := img.get("path")))
        return refs

    # -- the run's own leftovers ------------------------------------------------------------------

    def sweep_orphans(
        self, run_id: str, entry_ids: set[str] | None = None, dry_run: bool = False
    ) -> list[str]:
        """Delete PNGs left by dead or losing attempts of THIS run, this store's temp files of interrupted
        writes of the run's own objects, and claims no longer live. Returns the keys removed (or found,
        with dry_run).

        A PNG is removed only if its key has the run's naming (images/<kind>/<label>/<sample>.<attempt>.png),
        its entry is one of `entry_ids` (when given), no committed row references it, no live claim covers
        its sample (another driver may be rendering that shard: `dermgen.rundir.claims`), and the run_id
        embedded in the PNG is `run_id`. Temp files are left alone while any claim is live. A claim is
        removed only once stale, and only if unchanged since read. Nothing else is ever deleted.

        Order matters with a second driver at work: PNGs are listed first, then claims, then committed
        rows. A PNG listed was written under a claim taken before it; by the time claims are read that
        claim is either still live (the PNG is kept), or released after its shard committed (the rows,
        read last, reference the PNG), or stale (its attempt is dead or lost its claim).
        """
        images = [k for k in self.store.list(IMAGES_PREFIX) if parse_image_key(k)]
        claims = read_claims(self.store)
        now = time.time()
        live = {sid for sid, (claim, _) in claims.items() if claim is not None and claim.is_live(run_id, now)}
        guarded = ClaimedRanges(live)
        refs = self.referenced_images() if images else set()  # none in the parquet layout: no read
        orphans = []
        kept_for_claims = 0
        for key in images:
            parts = parse_image_key(key)
            if key in refs:
                continue
            if entry_ids is not None and parts["entry"] not in entry_ids:
                continue
            if guarded.covers(parts["entry"], int(parts["index"])):
                kept_for_claims += 1
                continue
            if _png_run_id(self.store, key) != run_id:
                continue
            orphans.append(key)
        temps = [] if live else [k for k in self.store.temp_files("") if _own_temp(k)]
        if not dry_run:
            for key in orphans:
                self.store.delete(key)
            for key in temps:
                self.store.delete_temp(key)
        stale = sweep_stale_claims(self.store, run_id, claims, dry_run=dry_run)
        if orphans or temps or stale:
            log.info(
                "%s %d orphaned image(s) from unfinished attempts, %d temp file(s) and %d stale claim(s)",
                "found" if dry_run else "removed",
                len(orphans),
                len(temps),
                len(stale),
            )
        if live:
            log.info(
                "%d shard(s) under a live claim of another driver: their %d unreferenced image(s) and any "
                "temp files are left for that driver",
                len(live),
                kept_for_claims,
            )
        return orphans + temps + stale

    def delete_run(self, run_ids: set[str]) -> int:
        """Delete a run's own objects (for --force-new-run): its shards, the PNGs they reference or that
        carry one of `run_ids` (or the run_id of a shard's rows), summary.json. Nothing else. Returns the
        count deleted."""
        listing = self.listing()
        run_ids = set(run_ids)
        for _, table in self.iter_tables(["run_id"], listing.shards):
            run_ids.update(table.column("run_id").to_pylist())
        refs = self.referenced_images(listing.shards) if listing.images else set()
        doomed = [shard_key(s) for s in listing.shards]
        doomed += [k for k in listing.images if k in refs or _png_run_id(self.store, k) in run_ids]
        doomed += [SUMMARY_JSON] if listing.summary_json else []
        for key in doomed:
            self.store.delete(key)
        return len(doomed)

    def is_local(self) -> bool:
        return isinstance(self.store, LocalStore)


def _own_temp(key: str) -> bool:
    """A temp file of an interrupted write of one of the run's own objects (``.<name>.<random>.tmp``)."""
    if key.startswith((SHARDS_PREFIX, IMAGES_PREFIX, CLAIMS_PREFIX)):
        return True
    return "/" not in key and key.startswith(tuple(f".{name}." for name in (RUN_JSON, SUMMARY_JSON, CARD_MD)))


def _png_run_id(store: Store, key: str) -> str | None:
    """The run_id dermgen embedded in a PNG's text chunk, or None (not ours, unreadable)."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(store.get(key)))
        meta = json.loads(img.info.get("dermgen", "{}"))
    except (KeyError, OSError, ValueError):
        return None
    return meta.get("run_id") if isinstance(meta, dict) else None
