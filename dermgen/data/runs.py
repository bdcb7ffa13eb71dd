"""Open a generated run (local folder or s3://) and select its rows, without loading image bytes.

A run is read through its one owner, `dermgen.rundir.RunDir`, and its store's one client configuration:
``io="arrow"`` (default) opens each shard as a seekable file (ranged reads on S3: a row group's image
column only); ``io="store"`` fetches whole shard objects.

Exactly the run's committed shards are read: stray files (nested or renamed Parquet copies, temp files)
are ignored with one warning; a shard that summary.json lists but that is gone is warned about with the
count (``strict=True`` raises); a sample_id seen twice raises; rows of another run_id raise. With
``verify_images=True`` every image's bytes are checked against its ``image_sha256`` when read.

Selection (`Selection`) happens on the metadata columns only: by default kept images of ``status == "ok"``
rows, plus any ``where`` equalities / memberships, score thresholds and a predicate on the row dict.
The result (`RowIndex`) lists (shard, row group, row) positions with each row's metadata; the datasets in
`dermgen.data.torch_dataset` fetch image bytes for those positions on demand.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from dermgen.data.labels import LabelMap, as_label_map
from dermgen.data.selection import Selection, make_selection
from dermgen.errors import ConfigError, StoreError
from dermgen.hashing import sha256_bytes
from dermgen.rundir import SHARDS_PREFIX, RunDir, shard_key
from dermgen.schema import SHARD_SCHEMA
from dermgen.store import LocalStore, Store

log = logging.getLogger(__name__)

__all__ = [
    "META_COLUMNS",
    "RowIndex",
    "Run",
    "Selection",
    "Unit",
    "make_selection",
    "open_run",
    "shard_files",
]

# Every column but the image bytes; `image.path` tells whether the row has an image at all.
META_COLUMNS: tuple[str, ...] = tuple(c for c in SHARD_SCHEMA.names if c != "image") + ("image.path",)

IoMode = Literal["auto", "arrow", "store"]


@dataclass(frozen=True)
class Unit:
    """One row group of one shard, with the offsets of its selected rows: the unit of streaming work."""

    shard_id: str
    row_group: int
    rows: tuple[int, ...]  # offsets inside the row group
    positions: tuple[int, ...]  # indices into RowIndex.records, same order as `rows`

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class RowIndex:
    """The selected rows of a run: metadata records and where each one's image lives."""

    run: Run
    records: list[dict[str, Any]]  # metadata + label_id + source; no image bytes
    locations: list[tuple[str, int, int]]  # (shard_id, row_group, row offset in the group)
    units: list[Unit] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)


class Run:
    """A run's committed shards, readable from this process (and, after pickling, from any other).

    File handles and clients are per process: they are dropped when pickled and rebuilt after a fork.
    """

    def __init__(
        self,
        uri: str | os.PathLike,
        *,
        io: IoMode = "auto",
        label_map: LabelMap | Mapping[str, int] | None = None,
        max_open_files: int = 16,
        strict: bool = False,
        verify_images: bool = False,
    ) -> None:
        if io not in ("auto", "arrow", "store"):
            raise ConfigError(f"io: {io!r} is not one of 'auto', 'arrow', 'store'")
        self.rundir = RunDir(uri)
        self.store: Store = self.rundir.store
        self.uri = self.store.uri
        self.io = io
        self.label_map = as_label_map(label_map)
        self.max_open_files = max_open_files
        self.strict = strict
        self.verify_images = verify_images
        if isinstance(self.store, LocalStore) and not self.store.root.exists():
            raise StoreError(f"run {self.uri!r} does not exist")
        self.store.check_readable()
        info = self.rundir.info_or_none()
        self.run_id: str | None = info.run_id if info is not None else None
        listing = self.rundir.listing()
        self.shard_ids: list[str] = listing.shards
        strays = [
            k for k in listing.strays + listing.temps if k.startswith(SHARDS_PREFIX) or k.endswith(".parquet")
        ]
        if strays:
            log.warning(
                "%s: ignoring %d stray file(s) that are not committed shards (e.g. %s); read exactly the run's "
                "shards, as these loaders do, or run `dermgen verify`",
                self.uri,
                len(strays),
                strays[0],
            )
        summary = self.rundir.summary() if listing.summary_json else None
        listed = (summary or {}).get("committed_shards")
        self.missing_shards: list[str] = sorted(set(listed) - set(self.shard_ids)) if listed else []
        if self.missing_shards:
            msg = (
                f"{self.uri}: {len(self.missing_shards)} shard(s) listed in summary.json are missing "
                f"(e.g. {self.missing_shards[0]}); their rows are not loaded"
            )
            if strict:
                raise StoreError(msg)
            log.warning("%s (strict=True raises)", msg)
        if not self.shard_ids:
            raise StoreError(f"run {self.uri!r} has no committed shards under {SHARDS_PREFIX}")
        self._pid = os.getpid()
        self._files: OrderedDict[str, pq.ParquetFile] = OrderedDict()

    # -- per-process handles -------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_files"] = OrderedDict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = -1  # force a fresh store client on first use in this process

    def _check_process(self) -> None:
        if self._pid != os.getpid():  # forked (DataLoader worker) or unpickled: no shared sockets
            self._files = OrderedDict()
            self.rundir = RunDir(self.uri)
            self.store = self.rundir.store
            self._pid = os.getpid()

    @property
    def is_s3(self) -> bool:
        return not isinstance(self.store, LocalStore)

    @property
    def effective_io(self) -> str:
        return "arrow" if self.io == "auto" else self.io

    def filesystem(self):
        """(pyarrow filesystem, base path) over the run's store; a shard's path is `shard_path`."""
        from dermgen.rundir.fs import store_filesystem

        self._check_process()
        return store_filesystem(self.store)

    def shard_path(self, shard_id: str) -> str:
        """The shard's path on `filesystem()`."""
        _, base = self.filesystem()
        return base + shard_key(shard_id)

    def shard_files(self) -> list[str]:
        """Local paths or s3:// URLs of exactly the committed shards (for tools that take file lists)."""
        return [self.store.local_path(shard_key(s)) or self.store.url(shard_key(s)) for s in self.shard_ids]

    def parquet_file(self, shard_id: str) -> pq.ParquetFile:
        """An open ParquetFile for the shard (kept open, up to `max_open_files` per process)."""
        self._check_process()
        pf = self._files.get(shard_id)
        if pf is not None:
            self._files.move_to_end(shard_id)
            return pf
        if self.effective_io == "store":
            import io as _io

            pf = pq.ParquetFile(_io.BytesIO(self.store.get(shard_key(shard_id))))
        else:
            pf = self.rundir.parquet_file(shard_id)
        self._files[shard_id] = pf
        while len(self._files) > self.max_open_files:
            self._files.popitem(last=False)
        return pf

    # -- reading ------------------------------------------------------------------------------------

    def read_metadata(self, shard_id: str) -> tuple[list[dict[str, Any]], list[int]]:
        """The shard's rows without image bytes, and its row-group sizes."""
        pf = self.parquet_file(shard_id)
        sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
        present = set(pf.schema_arrow.names)
        columns = [c for c in META_COLUMNS if c.split(".")[0] in present]  # older shards lack LATER_COLUMNS
        rows = pf.read(columns=columns).to_pylist()
        for missing in (c for c in META_COLUMNS if c.split(".")[0] not in present):
            for r in rows:
                r.setdefault(missing, None)
        return rows, sizes

    def read_image_column(self, shard_id: str, row_group: int) -> pa.Array:
        """The row group's PNG bytes as one Arrow binary array (only the image bytes column is read).

        With `verify_images`, every image's bytes are checked against the row's image_sha256 (StoreError)."""
        cols = ["image.bytes", "image_sha256", "sample_id"] if self.verify_images else ["image.bytes"]
        table = self.parquet_file(shard_id).read_row_group(row_group, columns=cols)
        col = table.column("image").combine_chunks().field("bytes")
        if self.verify_images:
            shas = table.column("image_sha256").to_pylist()
            ids = table.column("sample_id").to_pylist()
            for value, sha, sid in zip(col, shas, ids, strict=True):
                if value.is_valid and sha is not None and sha256_bytes(value.as_py()) != sha:
                    raise StoreError(
                        f"{self.uri}: image of {sid} (shard {shard_id}) does not match its image_sha256"
                    )
        return col

    def read_image_bytes(
        self, shard_id: str, row_group: int, rows: Sequence[int] | None = None
    ) -> list[bytes]:
        """PNG bytes of `rows` (offsets in the row group; all when None)."""
        col = self.read_image_column(shard_id, row_group)
        if rows is None:
            rows = range(len(col))
        out = []
        for r in rows:
            value = col[r]
            if not value.is_valid:
                raise StoreError(f"{self.uri}: shard {shard_id} row group {row_group} row {r} has no image")
            out.append(value.as_py())
        return out

    def _check_rows(self, shard_id: str, rows: list[dict[str, Any]], seen: dict[str, str]) -> None:
        for row in rows:
            sid = row["sample_id"]
            if sid in seen:
                raise StoreError(
                    f"{self.uri}: sample_id {sid} is in shard {seen[sid]} and again in {shard_id}; "
                    "a shard was copied or a run merged twice (run `dermgen verify`)"
                )
            seen[sid] = shard_id
            if row["shard_id"] != shard_id or (self.run_id is not None and row["run_id"] != self.run_id):
                raise StoreError(
                    f"{self.uri}: shard {shard_id} holds row {sid} of shard {row['shard_id']!r}, run "
                    f"{row['run_id']!r}; it does not belong to this run (run `dermgen verify`)"
                )

    def check_rows(self) -> None:
        """Raise StoreError if a sample_id appears twice or a shard holds another shard's or run's rows
        (reads three small columns of every shard)."""
        seen: dict[str, str] = {}
        for shard_id in self.shard_ids:
            rows = self.parquet_file(shard_id).read(columns=["sample_id", "shard_id", "run_id"]).to_pylist()
            self._check_rows(shard_id, rows, seen)

    def select(self, selection: Selection | None = None) -> RowIndex:
        """Selected rows in a deterministic order (shard id, then row), grouped into row-group units."""
        selection = selection or Selection()
        records: list[dict[str, Any]] = []
        locations: list[tuple[str, int, int]] = []
        units: list[Unit] = []
        no_image = 0
        seen: dict[str, str] = {}
        for shard_id in self.shard_ids:
            rows, sizes = self.read_metadata(shard_id)
            self._check_rows(shard_id, rows, seen)
            start = 0
            for rg, size in enumerate(sizes):
                offsets, positions = [], []
                for off in range(size):
                    row = rows[start + off]
                    if not selection.matches(row):
                        continue
                    if row.get("image") is None:
                        no_image += 1  # a dropped image whose PNG was not saved
                        continue
                    row = dict(row)
                    row["image_path"] = row.pop("image").get("path")
                    row["label_id"] = self.label_map.id(row["label"])
                    row["source"] = self.uri
                    positions.append(len(records))
                    offsets.append(off)
                    records.append(row)
                    locations.append((shard_id, rg, off))
                if offsets:
                    units.append(Unit(shard_id, rg, tuple(offsets), tuple(positions)))
                start += size
        if no_image:
            log.info("%s: %d selected row(s) have no saved image and were skipped", self.uri, no_image)
        return RowIndex(self, records, locations, units)

    def __repr__(self) -> str:
        return f"Run({self.uri!r}, shards={len(self.shard_ids)}, io={self.io!r})"


def open_run(
    uri: str | os.PathLike | Run,
    *,
    io: IoMode = "auto",
    label_map: LabelMap | Mapping[str, int] | None = None,
    strict: bool = False,
    verify_images: bool = False,
) -> Run:
    """Open a run's committed shards at a local path or s3://bucket/prefix (see `Run` for the checks)."""
    if isinstance(uri, Run):
        return uri
    return Run(uri, io=io, label_map=label_map, strict=strict, verify_images=verify_images)


def shard_files(uri: str | os.PathLike | Run) -> list[str]:
    """Exactly the committed shards of a run, as local paths or s3:// URLs, for tools that take a file list
    (``datasets.load_dataset("parquet", data_files=shard_files(run))``)."""
    return open_run(uri).shard_files()


def counts_by(records: Iterable[Mapping[str, Any]], key: str) -> dict[Any, int]:
    """How many records have each value of `key` (e.g. ``label``), for quick summaries."""
    out: dict[Any, int] = {}
    for r in records:
        out[r.get(key)] = out.get(r.get(key), 0) + 1
    return dict(sorted(out.items(), key=lambda kv: str(kv[0])))
