"""What `dermgen report` reads from a run: every row (one pass over the shards), a bounded,
deterministic sample of thumbnails for the contact sheets, and the images of the review section.

The review section shows every rendered image of a run with at most ``REVIEW_MAX`` of them, and a fixed
sample of ``REVIEW_MAX`` otherwise (half kept, half dropped, the rest from the other side when one side
has fewer; same run, same sample), so that a person can label them and calibrate the filter.
The candidates are kept in rank order and truncated after each shard, so memory stays bounded.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from dermgen.rundir import RunDir, RunInfo, image_bytes
from dermgen.store import Store

log = logging.getLogger("dermgen.report")

THUMBS_PER_SHEET = 48  # images per contact sheet (kept, dropped), spread evenly over labels
THUMB_SIDE = 128
REVIEW_MAX = 240  # images in the review section: all of a run with at most this many, else a sample

_ROW_COLUMNS = (
    "sample_id",
    "entry_id",
    "label",
    "prompt",
    "seed",
    "sampler",
    "steps",
    "status",
    "kept",
    "drop_reasons",
    "scores",
    "skin_tone",
    "attempt_id",
    "created_at",
    "model_id",
    "model_hash",
    "model_sha256",
    "loras",
    "actor",
    "node",
    "device",
)


@dataclass
class Thumb:
    """One sampled image for a contact sheet: its row (without bytes) and the encoded thumbnail."""

    rank: str
    row: dict[str, Any]
    data: bytes | None = None  # PNG bytes from the row, or None to fetch `path` from the store
    path: str | None = None
    uri: str | None = None  # data: URI of the thumbnail once made


@dataclass
class RunData:
    """Everything the page shows, read from one run."""

    uri: str
    run: dict[str, Any]
    summary: dict[str, Any] | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    shards: int = 0
    shards_planned: int | None = None
    kept_sheet: list[Thumb] = field(default_factory=list)
    dropped_sheet: list[Thumb] = field(default_factory=list)
    dropped_unsaved: int = 0
    unreadable: dict[str, int] = field(default_factory=dict)  # "kept"/"dropped" -> sampled images unread
    skin_tone_html: str = ""  # the skin-tone section (dermgen.skintone_report)
    review: list[Thumb] = field(default_factory=list)  # images a person can flip keep/drop on
    reviewable: int = 0  # rendered images with a readable PNG (the review shows all or a sample)


def _rank(sample_id: str) -> str:
    """A stable pseudo-random order of samples: same run, same contact sheets."""
    return hashlib.sha256(sample_id.encode()).hexdigest()


def _planned_shards(info: RunInfo) -> int | None:
    try:
        return len(info.plan().shards)
    except Exception:  # noqa: BLE001 - the count is informative only
        return None


def load_run(store: Store, per_sheet: int = THUMBS_PER_SHEET, review: int = REVIEW_MAX) -> RunData:
    """Read run.json, summary.json and every committed row; sample `per_sheet` kept and dropped images
    for the contact sheets and up to `review` images for the review section (module doc)."""
    rd = RunDir(store)
    info = rd.info()
    run = info.model_dump(mode="json")
    data = RunData(store.uri, run, rd.summary(), shards_planned=_planned_shards(info))
    pools: dict[tuple[bool, str], list[Thumb]] = defaultdict(list)
    review_pools: dict[bool, list[Thumb]] = {True: [], False: []}
    for _, table in rd.iter_tables():
        data.shards += 1
        cols = [c for c in _ROW_COLUMNS if c in table.column_names]
        rows = table.select(cols).to_pylist()
        images = table.column("image").to_pylist() if "image" in table.column_names else [None] * len(rows)
        for row, img in zip(rows, images, strict=True):
            data.rows.append(row)
            if row["status"] != "ok":
                continue
            if not img or not (img.get("bytes") or img.get("path")):
                data.dropped_unsaved += not row["kept"]
                continue
            data.reviewable += 1
            thumb = Thumb(_rank(row["sample_id"]), row, img.get("bytes"), img.get("path"))
            pools[(bool(row["kept"]), row["label"])].append(thumb)
            review_pools[bool(row["kept"])].append(thumb)
        for pool in pools.values():  # keep memory bounded: only the best-ranked candidates survive
            pool.sort(key=lambda t: t.rank)
            del pool[per_sheet:]
        for pool in review_pools.values():
            pool.sort(key=lambda t: t.rank)
            del pool[review:]
    made: dict[str, Thumb] = {}  # sample_id -> thumbnail already made (sheets and review share them)
    for kept in (True, False):
        by_label = {label: pool for (k, label), pool in sorted(pools.items()) if k == kept}
        sheet = _balanced(by_label, per_sheet)
        for t in sheet:
            _make_thumb(store, t)
            made[t.row["sample_id"]] = t
        data.unreadable["kept" if kept else "dropped"] = sum(t.uri is None for t in sheet)
        sheet = [t for t in sheet if t.uri is not None]
        if kept:
            data.kept_sheet = sheet
        else:
            data.dropped_sheet = sheet
    data.review = _review_sample(review_pools, review)
    for t in data.review:
        if t.row["sample_id"] in made:
            t.uri = made[t.row["sample_id"]].uri
        else:
            _make_thumb(store, t)
    data.review = [t for t in data.review if t.uri is not None]
    from dermgen.skintone_report import skin_tone_html

    data.skin_tone_html = skin_tone_html(store, data.rows, run.get("manifest") or {})
    return data


def _review_sample(pools: dict[bool, list[Thumb]], n: int) -> list[Thumb]:
    """All candidates when they fit in `n`; else half kept, half dropped (best rank), topped up from the
    side with more. Ordered by sample id."""
    kept, dropped = pools[True], pools[False]
    if len(kept) + len(dropped) > n:
        take_dropped = max(n - len(kept), min(len(dropped), n // 2))
        kept, dropped = kept[: n - take_dropped], dropped[:take_dropped]
    return sorted(kept + dropped, key=lambda t: t.row["sample_id"])


def _balanced(by_label: dict[str, list[Thumb]], n: int) -> list[Thumb]:
    """Up to `n` thumbs taken round-robin over labels (best rank first), grouped by label then id."""
    picked: dict[str, list[Thumb]] = {label: [] for label in by_label}
    queues = {label: list(pool) for label, pool in by_label.items()}
    total = 0
    while total < n and any(queues.values()):
        for label in sorted(queues):
            if queues[label] and total < n:
                picked[label].append(queues[label].pop(0))
                total += 1
    return [t for label in sorted(picked) for t in sorted(picked[label], key=lambda t: t.row["sample_id"])]


def _make_thumb(store: Store, thumb: Thumb) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        raw = image_bytes(store, {"bytes": thumb.data, "path": thumb.path}) or b""  # either layout
        with Image.open(io.BytesIO(raw)) as im:
            im = im.convert("RGB")
            im = im.resize((THUMB_SIDE, round(THUMB_SIDE * im.height / max(1, im.width))), Image.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
        thumb.uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    except (KeyError, OSError, ValueError, UnidentifiedImageError) as exc:
        log.warning("report: cannot make a thumbnail of %s: %s", thumb.row["sample_id"], exc)
    thumb.data = None  # the full PNG is no longer needed
