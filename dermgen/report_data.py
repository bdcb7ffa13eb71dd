"""What `dermgen report` reads from a run, in one streamed pass over the shards: counters of every row
(`RowStats`: per label, entry, sampler, steps, drop reason; score and timing series, all values up to
``SERIES_MAX`` and a fixed uniform sample beyond), a bounded, deterministic sample of thumbnails for the
contact sheets, and the images of the review section. Memory does not grow with the run: no row is kept
beyond the shard being read, except the sampled ones.

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
import math
import random
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timezone
from typing import Any

from dermgen.filters.names import SCORE_NAMES
from dermgen.rundir import READ_WORKERS, RunDir, RunInfo, bounded_map, image_bytes
from dermgen.store import Store

log = logging.getLogger("dermgen.report")

THUMBS_PER_SHEET = 48  # images per contact sheet (kept, dropped), spread evenly over labels
THUMB_SIDE = 128
REVIEW_MAX = 240  # images in the review section: all of a run with at most this many, else a sample
SERIES_MAX = 100_000  # values kept per score / timing series: all up to this many, else a uniform sample

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


class Series:
    """The values of one numeric series: every value up to `cap`, then a uniform sample of `cap` of them
    (reservoir sampling with a fixed seed: same run, same sample). `n`, `lo` and `hi` are exact."""

    def __init__(self, cap: int = SERIES_MAX, seed: int = 0) -> None:
        self.cap = cap
        self.values = array("d")
        self.n = 0
        self.lo = math.inf
        self.hi = -math.inf
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        self.n += 1
        self.lo, self.hi = min(self.lo, value), max(self.hi, value)
        if len(self.values) < self.cap:
            self.values.append(value)
        else:
            j = self._rng.randrange(self.n)
            if j < self.cap:
                self.values[j] = value

    @property
    def weight(self) -> float:
        """How many values each kept value stands for (1.0 while every value is kept)."""
        return self.n / len(self.values) if self.values else 1.0


@dataclass
class RowStats:
    """Everything the page counts over the rows, added one row at a time (`add`)."""

    rows: int = 0
    by_label: dict[Any, Counter] = field(default_factory=lambda: defaultdict(Counter))
    by_entry: dict[Any, Counter] = field(default_factory=lambda: defaultdict(Counter))
    by_sampler: dict[Any, Counter] = field(default_factory=lambda: defaultdict(Counter))
    by_steps: dict[Any, Counter] = field(default_factory=lambda: defaultdict(Counter))
    reasons: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # reason -> label
    scores: dict[str, tuple[Series, Series]] = field(default_factory=dict)  # name -> (kept, dropped)
    created: Series = field(default_factory=Series)  # created_at, seconds since the epoch (UTC)
    models: set[tuple] = field(default_factory=set)
    loras: set[str] = field(default_factory=set)
    devices: Counter = field(default_factory=Counter)
    nodes: set = field(default_factory=set)
    actors: set = field(default_factory=set)

    def add(self, r: dict[str, Any]) -> None:
        self.rows += 1
        part = "failed" if r["status"] != "ok" else "kept" if r["kept"] else "dropped"
        for counts, key in (
            (self.by_label, r["label"]),
            (self.by_entry, r["entry_id"]),
            (self.by_sampler, r.get("sampler")),
            (self.by_steps, r.get("steps")),
        ):
            counts[key]["rows"] += 1
            counts[key][part] += 1
        if not r["kept"]:
            for reason in r.get("drop_reasons") or (["failed"] if r["status"] != "ok" else ["(no reason)"]):
                self.reasons[reason][r["label"]] += 1
        if r["status"] == "ok":
            for name in SCORE_NAMES:
                v = (r.get("scores") or {}).get(name)
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    continue
                if name not in self.scores:
                    self.scores[name] = (Series(seed=1), Series(seed=2))
                self.scores[name][0 if r["kept"] else 1].add(float(v))
        created = r.get("created_at")
        if created is not None:
            if created.tzinfo is None:
                created = created.replace(tzinfo=timezone.utc)
            self.created.add(created.timestamp())
        self.models.add((r.get("model_id"), r.get("model_hash"), r.get("model_sha256")))
        for lr in r.get("loras") or []:
            self.loras.add(
                f"{lr['name'] or lr['path']} × {lr['scale']:.3g} (sha256 {(lr['sha256'] or '?')[:10]})"
            )
        self.devices[r.get("device")] += 1
        self.nodes.add(r.get("node"))
        self.actors.add(r.get("actor"))

    def totals(self) -> Counter:
        """kept, dropped, failed over the whole run."""
        out: Counter = Counter()
        for c in self.by_label.values():
            out.update({k: c[k] for k in ("kept", "dropped", "failed")})
        return out


@dataclass
class RunData:
    """Everything the page shows, read from one run."""

    uri: str
    run: dict[str, Any]
    summary: dict[str, Any] | None
    stats: RowStats = field(default_factory=RowStats)
    shards: int = 0
    shards_planned: int | None = None
    kept_sheet: list[Thumb] = field(default_factory=list)
    dropped_sheet: list[Thumb] = field(default_factory=list)
    dropped_unsaved: int = 0
    unreadable: dict[str, int] = field(default_factory=dict)  # "kept"/"dropped" -> sampled images unread
    skin_tone_html: str = ""  # the skin-tone section (dermgen.skintone_report)
    sheet_pools: dict[tuple[bool, str], int] = field(
        default_factory=dict
    )  # (kept, label) -> images with a PNG
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


def load_run(
    store: Store,
    per_sheet: int = THUMBS_PER_SHEET,
    review: int = REVIEW_MAX,
    *,
    workers: int = READ_WORKERS,
) -> RunData:
    """Read run.json, summary.json and every committed row, one shard at a time (`workers` shards and
    thumbnail images read at once); count the rows, sample `per_sheet` kept and dropped images for the
    contact sheets and up to `review` images for the review section (module doc)."""
    from dermgen.skintone_report import SkinToneSample

    rd = RunDir(store)
    info = rd.info()
    run = info.model_dump(mode="json")
    data = RunData(store.uri, run, rd.summary(), shards_planned=_planned_shards(info))
    tones = SkinToneSample()
    pools: dict[tuple[bool, str], list[Thumb]] = defaultdict(list)
    review_pools: dict[bool, list[Thumb]] = {True: [], False: []}
    pool_sizes: Counter = Counter()
    for _, table in rd.iter_tables(workers=workers):
        data.shards += 1
        cols = [c for c in _ROW_COLUMNS if c in table.column_names]
        rows = table.select(cols).to_pylist()
        images = table.column("image").to_pylist() if "image" in table.column_names else [None] * len(rows)
        del table
        for row, img in zip(rows, images, strict=True):
            data.stats.add(row)
            tones.add(row)
            if row["status"] != "ok":
                continue
            if not img or not (img.get("bytes") or img.get("path")):
                data.dropped_unsaved += not row["kept"]
                continue
            data.reviewable += 1
            thumb = Thumb(_rank(row["sample_id"]), row, img.get("bytes"), img.get("path"))
            pools[(bool(row["kept"]), row["label"])].append(thumb)
            pool_sizes[(bool(row["kept"]), row["label"])] += 1
            review_pools[bool(row["kept"])].append(thumb)
        for pool in pools.values():  # keep memory bounded: only the best-ranked candidates survive
            pool.sort(key=lambda t: t.rank)
            del pool[per_sheet:]
        for pool in review_pools.values():
            pool.sort(key=lambda t: t.rank)
            del pool[review:]
    data.sheet_pools = dict(pool_sizes)
    made: dict[str, Thumb] = {}  # sample_id -> thumbnail already made (sheets and review share them)
    for kept in (True, False):
        by_label = {label: pool for (k, label), pool in sorted(pools.items()) if k == kept}
        sheet = _balanced(by_label, per_sheet)
        _make_thumbs(store, sheet, workers)
        made.update((t.row["sample_id"], t) for t in sheet)
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
            t.data = None
    _make_thumbs(store, [t for t in data.review if t.uri is None and t.row["sample_id"] not in made], workers)
    data.review = [t for t in data.review if t.uri is not None]
    data.skin_tone_html = tones.html(store, run.get("manifest") or {}, workers=workers)
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


def _make_thumbs(store: Store, thumbs: list[Thumb], workers: int) -> None:
    """Make the thumbnails of `thumbs` (their images read and decoded `workers` at once)."""
    for _ in bounded_map(lambda t: _make_thumb(store, t), thumbs, workers):
        pass


def _image_bytes(store: Store, thumb: Thumb) -> bytes:
    """The encoded image of a sampled row: the bytes in its row, else the object at its path."""
    return image_bytes(store, {"bytes": thumb.data, "path": thumb.path}) or b""  # either layout


def _make_thumb(store: Store, thumb: Thumb) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        raw = _image_bytes(store, thumb)
        with Image.open(io.BytesIO(raw)) as im:
            im = im.convert("RGB")
            im = im.resize((THUMB_SIDE, round(THUMB_SIDE * im.height / max(1, im.width))), Image.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
        thumb.uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    except (KeyError, OSError, ValueError, UnidentifiedImageError) as exc:
        log.warning("report: cannot make a thumbnail of %s: %s", thumb.row["sample_id"], exc)
    thumb.data = None  # the full PNG is no longer needed
