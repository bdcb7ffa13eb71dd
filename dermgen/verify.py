"""`dermgen verify`: prove that a run holds each planned sample exactly once, intact.

Reads every committed shard and checks Parquet integrity and schema, rows against the plan rebuilt
from run.json (ids, seeds, samplers), image bytes against their sha256, PNG objects against rows,
duplicate sample ids, orphaned PNGs, and (once summary.json marks the run finished) planned shards
that are missing. Every problem is reported, not just the first.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from dermgen.hashing import sha256_bytes
from dermgen.manifest import parse_manifest
from dermgen.plan import make_shard, plan_run
from dermgen.schema import LATER_COLUMNS, SHARD_SCHEMA
from dermgen.shards import (
    IMAGES_PREFIX,
    RUN_JSON,
    SHARDS_PREFIX,
    SUMMARY_JSON,
    committed_shard_ids,
    shard_key,
)
from dermgen.store import Store

log = logging.getLogger(__name__)


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


def _plan_from_run_json(run: dict[str, Any]):
    manifest = parse_manifest(run["manifest"], source="run.json manifest")
    b = run["binding"]
    size = b.get("size")
    if size is None and run.get("config", {}).get("model") == "tiny":
        size = 64
    cfg_size = run.get("config", {}).get("size")
    return plan_run(
        manifest,
        run_seed=b["run_seed"],
        limit=b["limit"],
        size=size or cfg_size,
        shard_size=b["shard_size"],
        block=b["block"],
        cap_factor=b.get("cap_factor", 3.0),
        version=b.get("plan_version", 1),
    )


def verify_run(store: Store, *, check_images: bool = True) -> VerifyReport:
    import json

    report = VerifyReport(store.uri)
    try:
        run = json.loads(store.get(RUN_JSON))
    except KeyError:
        report.problems.append(f"{RUN_JSON}: missing (not a dermgen run?)")
        return report
    except ValueError as exc:
        report.problems.append(f"{RUN_JSON}: not valid JSON ({exc})")
        return report
    plan = None
    try:
        plan = _plan_from_run_json(run)
    except Exception as exc:  # noqa: BLE001
        report.problems.append(f"{RUN_JSON}: cannot rebuild the plan ({type(exc).__name__}: {exc})")

    expected_fields = {f.name: f.type for f in SHARD_SCHEMA}
    seen: dict[str, str] = {}
    referenced: set[str] = set()
    committed = sorted(committed_shard_ids(store))
    report.shards = len(committed)
    run_size = None
    for shard_id in committed:
        key = shard_key(shard_id)
        try:
            table = pq.read_table(io.BytesIO(store.get(key)))
        except Exception as exc:  # noqa: BLE001
            report.problems.append(f"{key}: unreadable Parquet ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        got = {f.name: f.type for f in table.schema}
        expected_here = {k: t for k, t in expected_fields.items() if k in got or k not in LATER_COLUMNS}
        if got != expected_here:
            diff = sorted(set(got.items()) ^ set(expected_here.items()), key=str)[:3]
            report.problems.append(f"{key}: schema differs from the shard schema ({diff})")
            continue
        rows = table.to_pylist()
        report.rows += len(rows)
        entry_id, start, end = _parse_shard_id(shard_id)
        if start is not None:
            indices = sorted(r["index"] for r in rows)
            if indices != list(range(start, end)):
                report.problems.append(
                    f"{key}: rows cover indices {_ranges(indices)}, planned {start}..{end - 1} "
                    f"({len(rows)} rows, planned {end - start})"
                )
        expected = {}
        if plan is not None and start is not None:
            try:
                entry = plan.entry(entry_id)
                run_size = run_size or plan.size
                expected = {
                    s.sample_id: s
                    for s in make_shard(
                        entry, start, end, plan.run_seed, plan.block, plan.size, version=plan.version
                    ).samples
                }
            except KeyError:
                report.problems.append(f"{key}: entry {entry_id!r} is not in the run's manifest")
        for r in rows:
            sid = r["sample_id"]
            if sid in seen:
                report.problems.append(f"{key}: duplicate sample_id {sid} (also in shard {seen[sid]})")
            seen.setdefault(sid, shard_id)
            if r["shard_id"] != shard_id:
                report.problems.append(f"{key}: row {sid} names shard {r['shard_id']!r}")
            want = expected.get(sid)
            if expected and want is None:
                report.problems.append(f"{key}: row {sid} is not in the plan")
            elif want is not None and (r["seed"], r["sampler"], r["steps"]) != (
                want.seed,
                want.sampler,
                want.steps,
            ):
                report.problems.append(
                    f"{key}: row {sid} has seed/sampler/steps {r['seed']}/{r['sampler']}/"
                    f"{r['steps']}, planned {want.seed}/{want.sampler}/{want.steps}"
                )
            img = r["image"]
            if r["status"] != "ok" or img is None:
                continue
            data = img.get("bytes")
            if data is not None and sha256_bytes(data) != r["image_sha256"]:
                report.problems.append(f"{key}: row {sid}: image bytes do not match image_sha256")
            path = img.get("path")
            if path:
                referenced.add(path)
                if check_images:
                    try:
                        file_bytes = store.get(path)
                        report.images_checked += 1
                        if sha256_bytes(file_bytes) != r["image_sha256"]:
                            report.problems.append(f"{path}: PNG does not match image_sha256 of row {sid}")
                    except KeyError:
                        report.problems.append(f"{path}: PNG of row {sid} is missing")
    for k in store.list(IMAGES_PREFIX):
        if k.endswith(".png") and k not in referenced:
            report.problems.append(f"{k}: orphaned PNG (no committed row references it)")
    for k in store.list(SHARDS_PREFIX):
        if not k.endswith(".parquet"):
            report.problems.append(f"{k}: unexpected object under shards/")
    if plan is not None:
        base = {s.shard_id for s in plan.shards}
        report.missing_shards = sorted(base - set(committed))
        if report.missing_shards and store.exists(SUMMARY_JSON):  # finished runs hold every base shard
            for shard_id in report.missing_shards:
                report.problems.append(
                    f"{shard_key(shard_id)}: planned shard missing although {SUMMARY_JSON} marks the run finished"
                )
    return report


def _parse_shard_id(shard_id: str) -> tuple[str, int | None, int | None]:
    parts = shard_id.rsplit("-", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], int(parts[1]), int(parts[2])
    return shard_id, None, None


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
