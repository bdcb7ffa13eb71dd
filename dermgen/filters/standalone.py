"""Run the filter over a folder (or any stream of images) and write one Parquet row per image.

Columns: ``path`` (relative to the input folder), ``kept``, ``drop_reasons`` (list<string>), one
float32 column per score name (null where not computed) and ``skin_tone`` (the group of ``ita``).
Images that cannot be decoded get a row with ``kept`` False and the drop reason ``unreadable``.

Scoring runs in a process pool; the keep/drop decision (which needs the duplicate index) runs in the
calling process in input order (sorted relative paths for folders), so results do not depend on the
number of workers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dermgen.filters.dedup import MemorisationScorer, iter_image_files, read_rgb
from dermgen.filters.names import SCORE_NAMES
from dermgen.filters.pipeline import FilterResult, ImageFilter, ScoredImage, build_filter
from dermgen.filters.rule import FilterConfig
from dermgen.skintone import skin_tone_of

__all__ = ["OUTPUT_SCHEMA", "UNREADABLE", "filter_folder", "filter_images"]

log = logging.getLogger(__name__)

UNREADABLE = "unreadable"

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
        image = read_rgb(source) if isinstance(source, (str, os.PathLike)) else source
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
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(flt,)) as pool:
        yield from pool.map(_score_item, items, chunksize=4)


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
    items: Iterable[tuple[str, np.ndarray | str | os.PathLike[str] | None]],
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
) -> dict[str, Any]:
    """Filter ``(key, image)`` pairs in the given order and optionally write the Parquet table.

    ``image`` is an HxWx3 uint8 RGB array, a path to decode, or None (unreadable). ``flt`` reuses an
    existing filter (its duplicate index carries on); otherwise one is built from ``preset``,
    ``overrides``, ``reference_dir``, ``clip_model``, ``config``. ``entry_overrides`` maps a key to
    per-image overrides. Returns a summary dict with ``rows`` (the table as a list of dicts).
    """
    start = time.perf_counter()
    flt = _make_filter(flt, preset, overrides, reference_dir, clip_model, config)
    workers = max(1, int(workers))
    entry_overrides = entry_overrides or {}
    for ov in entry_overrides.values():
        flt.config_for(ov)  # reject bad keys before any work
    rows: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    unreadable = 0
    for key, scored, error in _scored_stream(flt, ((str(k), v) for k, v in items), workers):
        if scored is None:
            unreadable += 1
            log.warning("filter: %s is unreadable (%s)", key, error)
            rows.append(_row(key, None))
            reasons[UNREADABLE] += 1
            continue
        result = flt.decide(scored, entry_overrides.get(key))
        rows.append(_row(key, result))
        for r in result.reasons:
            reasons[r] += 1
    if output_parquet is not None:
        table = pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)
        out = Path(output_parquet)
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out)
        log.info("filter: wrote %d rows to %s", len(rows), out)
    kept = sum(1 for r in rows if r["kept"])
    return {
        "images": len(rows),
        "kept": kept,
        "dropped": len(rows) - kept,
        "unreadable": unreadable,
        "keep_rate": (kept / len(rows)) if rows else None,
        "reasons": dict(sorted(reasons.items())),
        "output": None if output_parquet is None else str(output_parquet),
        "seconds": round(time.perf_counter() - start, 3),
        "rows": rows,
    }


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
    deterministic; ``workers`` processes score in parallel (default ``os.cpu_count()``). Returns the
    summary of :func:`filter_images` without the rows.
    """
    base = Path(input_dir)
    files = iter_image_files(base)
    flt = build_filter(preset, overrides=overrides, clip_model=clip_model, config=config)
    if reference_dir is not None and flt.enabled:
        flt.memorisation = MemorisationScorer(reference_dir)
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    n_workers = max(1, min(n_workers, len(files)))
    log.info("filter: %d images under %s, %d workers", len(files), base, n_workers)
    items = ((p.relative_to(base).as_posix(), p) for p in files)
    summary = filter_images(items, output_parquet, flt=flt, workers=n_workers)
    summary.pop("rows")
    summary["input"] = str(base)
    return summary


def _is_run(source: str) -> bool:
    from dermgen.rundir import RunDir

    return RunDir.looks_like_run(source)


def filter_run(
    uri: str,
    output_parquet: str | os.PathLike[str],
    reference_dir: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Re-score every rendered image of a generation run (local or s3://), with each entry's overrides.

    Rows are processed in sample order, so duplicate decisions are deterministic; `path` is the image's
    key in the run.
    """
    import io

    from PIL import Image

    from dermgen.rundir import RunDir

    rd = RunDir.open(uri, "filter")
    store = rd.store
    info = rd.info()
    per_entry = {e["id"]: e.get("filter") or {} for e in (info.manifest or {}).get("entries", [])}
    entry_of: dict[str, str] = {}

    def items():
        for _, table in rd.iter_tables(["sample_id", "entry_id", "status", "image"]):
            for row in table.to_pylist():
                img = row["image"]
                if row["status"] != "ok" or not img or img.get("bytes") is None:
                    continue
                key = img.get("path") or row["sample_id"]
                entry_of[key] = row["entry_id"]
                yield key, np.asarray(Image.open(io.BytesIO(img["bytes"])).convert("RGB"))

    flt = build_filter("default", overrides=overrides, reference_dir=reference_dir)
    keyed = list(items())
    entry_overrides = {k: per_entry.get(entry_of[k], {}) for k, _ in keyed}
    n_workers = max(1, min((os.cpu_count() or 1) if workers is None else workers, len(keyed) or 1))
    summary = filter_images(
        keyed, output_parquet, flt=flt, entry_overrides=entry_overrides, workers=n_workers
    )
    summary.pop("rows")
    summary["input"] = store.uri
    return summary


def filter_source(
    source: str,
    output_parquet: str | os.PathLike[str],
    reference_dir: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """`dermgen filter`: a generation run (folder with run.json, or s3://) or any folder of images."""
    if _is_run(str(source)):
        return filter_run(str(source), output_parquet, reference_dir, overrides=overrides, workers=workers)
    if not Path(source).is_dir():
        from dermgen.errors import ConfigError

        raise ConfigError(f"filter: input {str(source)!r} is not a folder of images or a dermgen run")
    return filter_folder(source, output_parquet, reference_dir, overrides=overrides, workers=workers)
