"""`dermgen verify`: prove that a run holds each planned sample exactly once, intact, as planned.

Reads every committed shard through `dermgen.rundir.RunDir` and checks: Parquet integrity and schema;
every row against the plan rebuilt from run.json (run_id, label, prompt, negative prompt, seed, sampler,
steps, CFG, size, adapters and their hashes, one model identity for the whole run); image bytes and PNG
objects against their sha256 (PNG objects only in the files layout, `dermgen.rundir.images`);
duplicate sample ids; orphaned PNGs; stray or nested Parquet files, shard
copies and temp files; and, once summary.json marks the run finished, that every shard it lists (top-ups
included) is still committed and no other shard appeared. Every problem is reported, not just the first.
"""

from __future__ import annotations

import logging
import re
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from dermgen.errors import StoreError
from dermgen.hashing import sha256_bytes
from dermgen.plan import Sample, make_shard
from dermgen.rundir import (
    IMAGES_PREFIX,
    READ_WORKERS,
    RUN_JSON,
    SHARDS_PREFIX,
    SUMMARY_JSON,
    RunDir,
    RunInfo,
    bounded_map,
    layout_problem,
    parse_shard_id,
    shard_key,
)
from dermgen.schema import conform, schema_problems
from dermgen.store import Store

log = logging.getLogger(__name__)

# Row column -> Sample attribute: every column the plan decides.
PLANNED_COLUMNS = {
    "label": "label",
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "seed": "seed",
    "sampler": "sampler",
    "steps": "steps",
    "cfg_scale": "cfg_scale",
    "width": "width",
    "height": "height",
    "entry_id": "entry_id",
    "index": "index",
}


@dataclass
class VerifyReport:
    uri: str
    shards: int = 0
    rows: int = 0
    images_checked: int = 0
    missing_shards: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "ok": self.ok,
            "shards": self.shards,
            "rows": self.rows,
            "images_checked": self.images_checked,
            "missing_shards": self.missing_shards,
            "problems": self.problems,
        }


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) <= 1e-4 * max(1.0, abs(b))
    return a == b


def _row_vs_plan(key: str, r: dict[str, Any], want: Sample, info: RunInfo) -> list[str]:
    out = []
    for col, attr in PLANNED_COLUMNS.items():
        if not _close(r[col], getattr(want, attr)):
            out.append(f"{key}: row {r['sample_id']}: {col} is {r[col]!r}, planned {getattr(want, attr)!r}")
    adapters = info.adapters()
    planned = {(p, round(float(s), 4)) for p, s in want.loras}
    planned |= {(a.path, round(a.scale, 4)) for a in (info.binding.loras if info.binding else [])}
    got = {(lr["path"], round(float(lr["scale"]), 4)) for lr in r["loras"] or []}
    if got != planned:
        out.append(f"{key}: row {r['sample_id']}: adapters {sorted(got)}, planned {sorted(planned)}")
    for lr in r["loras"] or []:
        bound = adapters.get(lr["path"])
        if bound is not None and lr["sha256"] != bound.sha256:
            out.append(
                f"{key}: row {r['sample_id']}: adapter {lr['path']} has sha256 {str(lr['sha256'])[:12]}..., "
                f"run.json binds {bound.sha256[:12]}..."
            )
    return out


_SAMPLE_ID_RE = re.compile(r"^(?P<entry>.+)-(?P<index>\d{7})$")


class SeenSamples:
    """Which shard first held each sample id, in about 4 bytes a row (verify's one O(rows) structure).

    Ids of the run's naming (`<entry>-<index:07d>`) are kept per entry as an array of shard ordinals
    (index -> ordinal + 1, 0 = not seen); any other id falls back to a dict.
    """

    def __init__(self) -> None:
        self._by_entry: dict[str, array] = {}
        self._other: dict[str, int] = {}

    def add(self, sample_id: str, ordinal: int) -> int | None:
        """Record `sample_id` in shard `ordinal`; the ordinal of the shard that held it first, if any."""
        m = _SAMPLE_ID_RE.match(sample_id)
        if m is None:
            if sample_id in self._other:
                return self._other[sample_id]
            self._other[sample_id] = ordinal
            return None
        slots = self._by_entry.setdefault(m["entry"], array("i"))
        index = int(m["index"])
        if index >= len(slots):
            slots.frombytes(bytes(4 * (index + 1 - len(slots))))
        if slots[index]:
            return slots[index] - 1
        slots[index] = ordinal + 1
        return None


def _png_sha256(store: Store, path: str) -> str | None:
    """sha256 of the PNG object at `path`, None if it is missing (read by verify's bounded pool)."""
    try:
        return sha256_bytes(store.get(path))
    except KeyError:
        return None


def _read_raw(rd: RunDir, shard_id: str) -> Any:
    """The shard's table as stored, or the exception that reading it raised (reported, not fatal)."""
    try:
        return rd.read_shard(shard_id, raw=True)
    except Exception as exc:  # noqa: BLE001
        return exc


def verify_run(
    store: Store | RunDir, *, check_images: bool = True, workers: int = READ_WORKERS
) -> VerifyReport:
    """Check the run (module doc). Streams: one shard's rows at a time, `workers` shard and PNG reads
    at once; beyond the listing it keeps only ~4 bytes per sample id and a flag per listed PNG."""
    rd = store if isinstance(store, RunDir) else RunDir(store)
    report = VerifyReport(rd.uri)
    rd.store.check_readable()  # a missing folder or bucket is a store problem (exit 3), not a finding
    try:
        info = rd.info()
    except StoreError as exc:
        report.problems.append(
            f"{RUN_JSON}: {exc}"
            if "holds no" not in str(exc)
            else f"{RUN_JSON}: missing (not a dermgen run?)"
        )
        return report
    plan = None
    if info.has_plan:
        try:
            plan = info.plan()
        except Exception as exc:  # noqa: BLE001
            report.problems.append(f"{RUN_JSON}: cannot rebuild the plan ({type(exc).__name__}: {exc})")

    listing = rd.listing()
    for k in listing.strays:
        if k.startswith(SHARDS_PREFIX) or k.endswith(".parquet"):
            report.problems.append(f"{k}: stray file (a nested, renamed or copied Parquet is not a shard)")
        elif k.startswith(IMAGES_PREFIX):
            report.problems.append(f"{k}: unexpected object under {IMAGES_PREFIX}")
    for k in listing.temps:
        report.problems.append(f"{k}: leftover temp file of an interrupted write")

    seen = SeenSamples()
    listed_images = listing.images  # sorted; a row's PNG marks its slot in `referenced`
    referenced = bytearray(len(listed_images))
    committed = listing.shards
    report.shards = len(committed)
    model_ident: tuple | None = None
    tables = bounded_map(lambda sid: _read_raw(rd, sid), committed, workers)
    for ordinal, (shard_id, table) in enumerate(tables):
        key = shard_key(shard_id)
        if isinstance(table, Exception):
            exc = table
            report.problems.append(f"{key}: unreadable Parquet ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        diff = schema_problems(table.schema)
        if diff:
            report.problems.append(f"{key}: schema differs from the shard schema ({diff[:3]})")
            continue
        rows = conform(table).to_pylist()
        report.rows += len(rows)
        entry_id, start, end = parse_shard_id(shard_id)
        indices = sorted(r["index"] for r in rows)
        if indices != list(range(start, end)):
            report.problems.append(
                f"{key}: rows cover indices {_ranges(indices)}, planned {start}..{end - 1} "
                f"({len(rows)} rows, planned {end - start})"
            )
        expected: dict[str, Sample] = {}
        if plan is not None:
            try:
                entry = plan.entry(entry_id)
                expected = {
                    s.sample_id: s
                    for s in make_shard(
                        entry, start, end, plan.run_seed, plan.block, plan.size, version=plan.version
                    ).samples
                }
            except KeyError:
                report.problems.append(f"{key}: entry {entry_id!r} is not in the run's manifest")
        pngs: list[tuple[str, str, str]] = []  # (path, image_sha256, sample_id) of this shard's rows
        for r in rows:
            sid = r["sample_id"]
            first = seen.add(sid, ordinal)
            if first is not None:
                report.problems.append(f"{key}: duplicate sample_id {sid} (also in shard {committed[first]})")
            if r["shard_id"] != shard_id:
                report.problems.append(f"{key}: row {sid} names shard {r['shard_id']!r}")
            if r["run_id"] != info.run_id:
                report.problems.append(f"{key}: row {sid} belongs to run {r['run_id']}, not {info.run_id}")
            ident = (r["model_id"], r["model_sha256"])
            if model_ident is None:
                model_ident = ident
            elif ident != model_ident:
                report.problems.append(
                    f"{key}: row {sid} was made by model {ident}, the run by {model_ident}"
                )
            want = expected.get(sid)
            if expected and want is None:
                report.problems.append(f"{key}: row {sid} is not in the plan")
            elif want is not None:
                report.problems.extend(_row_vs_plan(key, r, want, info))
            img = r["image"]
            if r["status"] != "ok" or img is None:
                continue
            wrong = layout_problem(info.images, img)
            if wrong:
                report.problems.append(f"{key}: row {sid}: {wrong}")
            data = img.get("bytes")
            if data is not None and sha256_bytes(data) != r["image_sha256"]:
                report.problems.append(f"{key}: row {sid}: image bytes do not match image_sha256")
            path = img.get("path")
            if not path and data is not None:  # the parquet layout: the row's bytes are the stored image
                report.images_checked += 1
            if path:
                at = bisect_left(listed_images, path)
                if at < len(listed_images) and listed_images[at] == path:
                    referenced[at] = 1
                if check_images:
                    pngs.append((path, r["image_sha256"], sid))
        del rows, table
        for (path, want, sid), got in bounded_map(lambda p: _png_sha256(rd.store, p[0]), pngs, workers):
            if got is None:
                report.problems.append(f"{path}: PNG of row {sid} is missing")
                continue
            report.images_checked += 1
            if got != want:
                report.problems.append(f"{path}: PNG does not match image_sha256 of row {sid}")
    for k, ref in zip(listed_images, referenced, strict=True):
        if not ref:
            report.problems.append(f"{k}: orphaned PNG (no committed row references it)")
    summary = rd.summary() if listing.summary_json else None
    if plan is not None:
        base = {s.shard_id for s in plan.shards}
        report.missing_shards = sorted(base - set(committed))
        if report.missing_shards and summary is not None:  # finished runs hold every base shard
            for shard_id in report.missing_shards:
                report.problems.append(
                    f"{shard_key(shard_id)}: planned shard missing although {SUMMARY_JSON} marks the run finished"
                )
    listed = (summary or {}).get("committed_shards")
    if isinstance(listed, list):
        for shard_id in sorted(set(listed) - set(committed) - set(report.missing_shards)):
            report.problems.append(f"{shard_key(shard_id)}: listed in {SUMMARY_JSON} but missing")
        for shard_id in sorted(set(committed) - set(listed)):
            report.problems.append(f"{shard_key(shard_id)}: committed but not listed in {SUMMARY_JSON}")
    return report


def _ranges(indices: list[int]) -> str:
    if not indices:
        return "none"
    out, lo, prev = [], indices[0], indices[0]
    for i in indices[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(f"{lo}" if lo == prev else f"{lo}..{prev}")
        if i is not None:
            lo = prev = i
    return ",".join(out[:5]) + ("..." if len(out) > 5 else "")
