"""Run the filter over a folder (or any stream of images) and write one Parquet row per image.

Columns: ``path`` (relative to the input folder), ``kept``, ``drop_reasons`` (list<string>), one
float32 column per score name (null where not computed) and ``skin_tone`` (the group of ``ita``).
Images that cannot be decoded get a row with ``kept`` False and the drop reason ``unreadable``.

Scoring runs in a process pool; the keep/drop decision (which needs the duplicate index) runs in the
calling process in input order (sorted relative paths for folders), so results do not depend on the
number of workers.

Memory is bounded: images are decoded one at a time (in the worker that scores them), at most
``PREFETCH`` items per worker are in flight, and rows go to the Parquet file in batches of
``BATCH_ROWS``. What grows with the number of images is the duplicate index (about 20 KB per kept
image, see :mod:`dermgen.filters.dedup`) and, for runs, the sample id -> entry map.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dermgen.filters.dedup import MemorisationScorer, decode_rgb, iter_image_files, read_rgb
from dermgen.filters.names import SCORE_NAMES
from dermgen.filters.pipeline import FilterResult, ImageFilter, ScoredImage, build_filter
from dermgen.filters.rule import FilterConfig
from dermgen.skintone import skin_tone_of

__all__ = ["OUTPUT_SCHEMA", "UNREADABLE", "filter_folder", "filter_images"]

log = logging.getLogger(__name__)

UNREADABLE = "unreadable"
PREFETCH = 8  # items in flight per worker process
BATCH_ROWS = 1024  # rows per Parquet write

OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("drop_reasons", pa.list_(pa.string()), nullable=False),
        *[pa.field(name, pa.float32()) for name in SCORE_NAMES],
        pa.field("skin_tone", pa.string()),  # the group of ``ita`` (dermgen.skintone)
    ]
)

# ---- worker side -------------------------------------------------------------------------------

_WORKER_FILTER: ImageFilter | None = None


def _init_worker(flt: ImageFilter) -> None:
    import cv2

    cv2.setNumThreads(1)
    global _WORKER_FILTER
    _WORKER_FILTER = flt


def _score_item(item: tuple[str, Any]) -> tuple[str, ScoredImage | None, str | None]:
    """(key, scores or None, error) for a path or an array; runs in a worker (or inline)."""
    key, source = item
    assert _WORKER_FILTER is not None
    try:
        if isinstance(source, (str, os.PathLike)):
            image = read_rgb(source)
        elif isinstance(source, (bytes, bytearray, memoryview)):
            image = decode_rgb(source)
        else:
            image = source
        if image is None:
            return key, None, "cannot decode image"
        return key, _WORKER_FILTER.score(image), None
    except (OSError, ValueError) as exc:
        return key, None, str(exc)


# ---- caller side -------------------------------------------------------------------------------


def _make_filter(
    flt: ImageFilter | None,
    preset: str,
    overrides: Mapping[str, Any] | None,
    reference_dir: str | os.PathLike[str] | None,
    clip_model: str | os.PathLike[str] | None,
    config: FilterConfig | Mapping[str, Any] | None,
) -> ImageFilter:
    if flt is not None:
        return flt
    return build_filter(
        preset, overrides=overrides, reference_dir=reference_dir, clip_model=clip_model, config=config
    )


def _scored_stream(
    flt: ImageFilter, items: Iterable[tuple[str, Any]], workers: int
) -> Iterator[tuple[str, ScoredImage | None, str | None]]:
    if workers <= 1:
        global _WORKER_FILTER
        previous = _WORKER_FILTER
        _WORKER_FILTER = flt
        try:
            for item in items:
                yield _score_item(item)
        finally:
            _WORKER_FILTER = previous
        return
    # the workers only score (stateless); the duplicate index stays in this process. "spawn", not
    # "fork": forking after OpenCV/BLAS thread pools have started can deadlock the children.
    # Executor.map would submit (and so hold) every item at once: keep a bounded window instead.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(flt,)) as pool:
        window: deque = deque()
        for item in items:
            window.append(pool.submit(_score_item, item))
            if len(window) >= workers * PREFETCH:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def _row(key: str, result: FilterResult | None) -> dict[str, Any]:
    if result is None:
        row: dict[str, Any] = {"path": key, "kept": False, "drop_reasons": [UNREADABLE]}
        row.update(dict.fromkeys(SCORE_NAMES))
        row["skin_tone"] = None
        return row
    row = {"path": key, "kept": result.kept, "drop_reasons": list(result.reasons)}
    for name in SCORE_NAMES:
        v = result.scores.get(name)
        row[name] = None if v is None else float(v)
    row["skin_tone"] = skin_tone_of(row.get("ita"))
    return row


def filter_images(
    items: Iterable[tuple[str, np.ndarray | bytes | str | os.PathLike[str] | None]],
    output_parquet: str | os.PathLike[str] | None = None,
    *,
    flt: ImageFilter | None = None,
    preset: str = "default",
    overrides: Mapping[str, Any] | None = None,
    reference_dir: str | os.PathLike[str] | None = None,
    clip_model: str | os.PathLike[str] | None = None,
    config: FilterConfig | Mapping[str, Any] | None = None,
    entry_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    workers: int = 1,
    keep_rows: bool = True,
) -> dict[str, Any]:
    """Filter ``(key, image)`` pairs in the given order and optionally write the Parquet table.

    ``image`` is an HxWx3 uint8 RGB array, encoded image bytes, a path to decode, or None (unreadable).
    ``items`` is consumed lazily (a generator keeps memory bounded). ``flt`` reuses an existing filter
    (its duplicate index carries on); otherwise one is built from ``preset``, ``overrides``,
    ``reference_dir``, ``clip_model``, ``config``. ``entry_overrides`` maps a key to per-image overrides
    (looked up with ``.get`` when the image is decided). Returns a summary dict, with ``rows`` (the
    table as a list of dicts) when ``keep_rows``; rows are written to the Parquet file in batches.
    """
    start = time.perf_counter()
    flt = _make_filter(flt, preset, overrides, reference_dir, clip_model, config)
    workers = max(1, int(workers))
    entry_overrides = entry_overrides or {}
    for ov in entry_overrides.values():
        flt.config_for(ov)  # reject bad keys before any work
    rows: list[dict[str, Any]] = []
    batch: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    unreadable = images = kept = 0
    writer: pq.ParquetWriter | None = None
    out = None if output_parquet is None else Path(output_parquet)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        writer = pq.ParquetWriter(out, OUTPUT_SCHEMA)

    def flush() -> None:
        if writer is not None and batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=OUTPUT_SCHEMA))
        batch.clear()

    try:
        for key, scored, error in _scored_stream(flt, ((str(k), v) for k, v in items), workers):
            if scored is None:
                unreadable += 1
                log.warning("filter: %s is unreadable (%s)", key, error)
                row = _row(key, None)
                reasons[UNREADABLE] += 1
            else:
                result = flt.decide(scored, entry_overrides.get(key))
                row = _row(key, result)
                reasons.update(result.reasons)
            images += 1
            kept += bool(row["kept"])
            if keep_rows:
                rows.append(row)
            batch.append(row)
            if len(batch) >= BATCH_ROWS:
                flush()
        flush()
    finally:
        if writer is not None:
            writer.close()
    if out is not None:
        log.info("filter: wrote %d rows to %s", images, out)
    summary: dict[str, Any] = {
        "images": images,
        "kept": kept,
        "dropped": images - kept,
        "unreadable": unreadable,
        "keep_rate": (kept / images) if images else None,
        "reasons": dict(sorted(reasons.items())),
        "output": None if output_parquet is None else str(output_parquet),
        "seconds": round(time.perf_counter() - start, 3),
    }
    if keep_rows:
        summary["rows"] = rows
    return summary


def filter_folder(
    input_dir: str | os.PathLike[str],
    output_parquet: str | os.PathLike[str],
    reference_dir: str | os.PathLike[str] | None = None,
    *,
    preset: str = "default",
    overrides: Mapping[str, Any] | None = None,
    config: FilterConfig | Mapping[str, Any] | None = None,
    clip_model: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Filter every png/jpg/jpeg/webp under ``input_dir`` (recursive) into ``output_parquet``.

    Paths are processed in sorted order of their relative path, so the duplicate decisions are
    deterministic; ``workers`` processes score in parallel (default ``os.cpu_count()``), each decoding
    the files it scores. Returns the summary of :func:`filter_images` (without rows) and ``filter``,
    the effective filter (:func:`dermgen.filters.identity.effective_filter`).
    """
    from dermgen.filters.identity import effective_filter

    base = Path(input_dir)
    files = iter_image_files(base)
    flt = build_filter(preset, overrides=overrides, clip_model=clip_model, config=config)
    if reference_dir is not None and flt.enabled:
        flt.memorisation = MemorisationScorer(reference_dir)
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    n_workers = max(1, min(n_workers, len(files)))
    log.info("filter: %d images under %s, %d workers", len(files), base, n_workers)
    items = ((p.relative_to(base).as_posix(), p) for p in files)
    summary = filter_images(items, output_parquet, flt=flt, workers=n_workers, keep_rows=False)
    summary["input"] = str(base)
    summary["filter"] = effective_filter(preset, overrides, reference_dir, clip_model, config=flt.config)
    return summary


def _is_run(source: str) -> bool:
    from dermgen.rundir import RunDir

    return RunDir.looks_like_run(source)


class _ByEntry(Mapping):
    """key -> the overrides of the entry that key's row belongs to (filled while the rows stream by)."""

    def __init__(self, per_entry: Mapping[str, Mapping[str, Any]]):
        self.per_entry = per_entry
        self.entry_of: dict[str, str] = {}

    def __getitem__(self, key: str) -> Mapping[str, Any]:
        return self.per_entry.get(self.entry_of.pop(key), {})

    def __iter__(self) -> Iterator[str]:
        return iter(())  # nothing to validate here: filter_run checks the entries' overrides

    def __len__(self) -> int:
        return 0


def filter_run(
    uri: str,
    output_parquet: str | os.PathLike[str],
    reference_dir: str | os.PathLike[str] | None = None,
    *,
    preset: str = "default",
    overrides: Mapping[str, Any] | None = None,
    clip_model: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Re-decide every rendered image of a generation run (local or s3://) with a filter (``preset``:
    default or a profile YAML) and each entry's overrides; nothing is rendered.

    Shards are read one at a time and each image's PNG bytes are decoded by the worker that scores it,
    so memory does not hold the run's images. Rows are processed in sample order, so duplicate
    decisions are deterministic; ``path`` is the image's key in the run.
    """
    from dermgen.filters.identity import effective_filter
    from dermgen.rundir import RunDir, image_bytes, image_name

    rd = RunDir.open(uri, "filter")
    store = rd.store
    info = rd.info()
    per_entry = {e["id"]: e.get("filter") or {} for e in (info.manifest or {}).get("entries", [])}
    flt = build_filter(preset, overrides=overrides, reference_dir=reference_dir, clip_model=clip_model)
    for ov in per_entry.values():
        flt.config_for(ov)  # reject bad keys before any work
    by_entry = _ByEntry(per_entry)

    def items() -> Iterator[tuple[str, bytes]]:
        for _, table in rd.iter_tables(["sample_id", "entry_id", "status", "image"]):
            for row in table.to_pylist():
                img = row["image"]
                if row["status"] != "ok" or not img:
                    continue
                try:
                    data = image_bytes(store, img)  # the row's bytes, or its PNG object (either layout)
                except KeyError:
                    data = None
                if data is None:
                    continue
                key = image_name(img, row["sample_id"])
                by_entry.entry_of[key] = row["entry_id"]
                yield key, data

    n_workers = max(1, (os.cpu_count() or 1) if workers is None else workers)
    summary = filter_images(
        items(), output_parquet, flt=flt, entry_overrides=by_entry, workers=n_workers, keep_rows=False
    )
    summary["input"] = store.uri
    summary["filter"] = effective_filter(preset, overrides, reference_dir, clip_model, config=flt.config)
    return summary


def filter_source(
    source: str,
    output_parquet: str | os.PathLike[str],
    reference_dir: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    workers: int | None = None,
    preset: str = "default",
) -> dict[str, Any]:
    """`dermgen filter`: a generation run (folder with run.json, or s3://) or any folder of images.

    ``preset``: default or a profile YAML (``dermgen filter calibrate``); a run is re-decided from its
    stored images, nothing is rendered."""
    if _is_run(str(source)):
        return filter_run(
            str(source), output_parquet, reference_dir, preset=preset, overrides=overrides, workers=workers
        )
    if not Path(source).is_dir():
        from dermgen.errors import ConfigError

        raise ConfigError(f"filter: input {str(source)!r} is not a folder of images or a dermgen run")
    return filter_folder(
        source, output_parquet, reference_dir, preset=preset, overrides=overrides, workers=workers
    )
