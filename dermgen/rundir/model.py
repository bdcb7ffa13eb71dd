"""Typed values of a run's on-disk form: run.json (`RunInfo`), its plan binding, shard summaries.

run.json is parsed here and nowhere else; `RunInfo.plan()` rebuilds the plan from what run.json recorded
(the plan's own size and cap factor), never from defaults guessed again by a reader.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError

from dermgen.errors import StoreError
from dermgen.rundir.images import LEGACY_IMAGE_LAYOUT, ImageLayout
from dermgen.rundir.layout import RUN_JSON, parse_shard_id

# Columns a shard summary needs (resume, inspect): never the image bytes.
SUMMARY_COLUMNS = ("shard_id", "run_id", "entry_id", "index", "label", "status", "kept", "drop_reasons")


class AdapterBinding(BaseModel):
    """An adapter that decides pixels: where it was read from, its merge scale and its content hash."""

    model_config = ConfigDict(extra="forbid")
    path: str
    scale: float
    sha256: str


class FilterBinding(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: str
    overrides: dict[str, float | None] = {}
    reference_dir: str | None = None


class Binding(BaseModel):
    """Everything that decides a run's pixels and decisions; run_id is a hash of it."""

    model_config = ConfigDict(extra="forbid")
    manifest_sha256: str
    model: str
    loras: list[AdapterBinding] = []
    manifest_loras: list[AdapterBinding] = []
    run_seed: int
    limit: int | None = None
    size: int | None = None
    shard_size: int
    block: int
    cap_factor: float
    filter: FilterBinding | None = None
    plan_version: int | None = None  # absent in v1 runs (their binding, and so their run_id, predate it)


class RunInfo(BaseModel):
    """run.json. A generated run has a binding and its manifest; a packed run (folder of images) has none."""

    model_config = ConfigDict(extra="allow")
    run_id: str
    kind: Literal["generated", "packed"] = "generated"
    binding: Binding | None = None
    plan_size: int | None = None
    created_at: str | None = None
    config: dict[str, Any] = {}
    manifest: dict[str, Any] | None = None
    targets: dict[str, int] = {}
    targets_by_label: dict[str, int] = {}
    images: ImageLayout = LEGACY_IMAGE_LAYOUT  # where image bytes live (dermgen.rundir.images)

    @classmethod
    def parse(cls, data: bytes, where: str) -> RunInfo:
        try:
            return cls.model_validate(json.loads(data))
        except ValueError as exc:
            first = str(exc).splitlines()[0] if not isinstance(exc, ValidationError) else _first_error(exc)
            raise StoreError(f"{where}/{RUN_JSON} is not a dermgen run.json ({first})") from None

    def to_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True, default=str).encode()

    @property
    def has_plan(self) -> bool:
        return self.kind == "generated" and self.binding is not None and self.manifest is not None

    def plan(self):
        """The run's plan, rebuilt from run.json exactly as `generate` made it."""
        from dermgen.manifest import parse_manifest
        from dermgen.plan import plan_run

        if not self.has_plan:
            raise StoreError(f"run {self.run_id} ({self.kind}) has no generation plan")
        b = self.binding
        size = self.plan_size
        if size is None:  # run.json written before plan_size was recorded
            size = b.size
            if size is None and self.config.get("model") == "tiny":
                from dermgen.tiny import TINY_DEFAULT_SIZE

                size = TINY_DEFAULT_SIZE
        return plan_run(
            parse_manifest(self.manifest, source=f"{RUN_JSON} manifest"),
            run_seed=b.run_seed,
            limit=b.limit,
            size=size,
            shard_size=b.shard_size,
            block=b.block,
            cap_factor=b.cap_factor,
            version=b.plan_version or 1,
        )

    def adapters(self) -> dict[str, AdapterBinding]:
        """Every bound adapter by path (--lora and those named in the manifest)."""
        if self.binding is None:
            return {}
        return {a.path: a for a in [*self.binding.loras, *self.binding.manifest_loras]}


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"


@dataclass(frozen=True)
class ShardSummary:
    """Per committed shard, the counts resume and inspect need; built only by `summarise_shard`."""

    shard_id: str
    entry_id: str
    run_ids: tuple[str, ...]
    planned: int
    ok: int
    kept: int
    end: int
    drop_reasons: dict[str, int] = field(default_factory=dict)
    per_label: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise_shard(shard_id: str, table: pa.Table) -> ShardSummary:
    rows = table.select([c for c in SUMMARY_COLUMNS if c in table.column_names]).to_pylist()
    reasons: Counter[str] = Counter()
    per_label: dict[str, Counter] = {}
    for r in rows:
        if not r["kept"]:
            reasons.update(r["drop_reasons"] or [])
        c = per_label.setdefault(r["label"], Counter())
        c["rows"] += 1
        c["kept"] += bool(r["kept"])
        c["failed"] += r["status"] != "ok"
        c["dropped"] += r["status"] == "ok" and not r["kept"]
    parsed = parse_shard_id(shard_id)
    return ShardSummary(
        shard_id=shard_id,
        entry_id=rows[0]["entry_id"] if rows else (parsed[0] if parsed else shard_id),
        run_ids=tuple(sorted({r["run_id"] for r in rows})),
        planned=len(rows),
        ok=sum(r["status"] == "ok" for r in rows),
        kept=sum(bool(r["kept"]) for r in rows),
        end=max((r["index"] for r in rows), default=-1) + 1,
        drop_reasons=dict(reasons),
        per_label={k: dict(v) for k, v in per_label.items()},
    )
