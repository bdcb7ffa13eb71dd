"""A run's life outside the workers: validate, plan, bind to the output, resume, summarise.

Nothing here imports Ray; `dermgen.runner` drives the workers between `prepare_run` and `finalize_run`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from dermgen.config import GenerateConfig
from dermgen.errors import ConfigError, PlanMismatchError
from dermgen.manifest import Manifest, load_manifest, manifest_hash
from dermgen.pipeline import (
    LoraSpec,
    check_lora_compatible,
    check_lora_file,
    model_fingerprint,
    resolve_model,
)
from dermgen.plan import Plan, plan_run
from dermgen.provenance import environment, redact
from dermgen.scheduler import ShardScheduler
from dermgen.shards import RUN_JSON, SUMMARY_JSON, iter_shard_tables, sweep_orphans
from dermgen.store import Store, open_store
from dermgen.tiny import TINY_DEFAULT_SIZE
from dermgen.worker import WorkerOptions

log = logging.getLogger(__name__)

BINDING_FIELDS = (
    "manifest_sha256",
    "model",
    "loras",
    "run_seed",
    "limit",
    "size",
    "shard_size",
    "block",
    "cap_factor",
    "filter",
    "plan_version",
)


@dataclass
class PreparedRun:
    config: GenerateConfig
    manifest: Manifest
    plan: Plan
    store: Store
    run_id: str
    binding: dict[str, Any]
    worker_options: WorkerOptions
    scheduler: ShardScheduler
    resumed_shards: int = 0
    started: float = field(default_factory=time.time)


def model_arg(config: GenerateConfig, manifest: Manifest) -> str:
    return config.model or manifest.model or "derm-t2im"


def plan_for(config: GenerateConfig, manifest: Manifest) -> Plan:
    size = config.size
    if size is None and model_arg(config, manifest) == "tiny":
        size = TINY_DEFAULT_SIZE  # the tiny model renders 64x64 unless told otherwise
    return plan_run(
        manifest,
        run_seed=config.seed,
        limit=config.limit,
        size=size,
        shard_size=config.shard_size,
        block=config.resolved_block(),
        cap_factor=config.cap_factor,
        version=config.resolved_plan_version(),
    )


def validate(config: GenerateConfig) -> tuple[Manifest, Plan, list[LoraSpec], str]:
    """Everything that can be checked without a GPU or a store: manifest, LoRA files, model reference."""
    manifest = load_manifest(config.resolved_manifest())
    model = model_arg(config, manifest)
    loras = [LoraSpec.parse(text) for text in config.lora]
    for path in [s.path for s in loras] + [lr.path for e in manifest.entries for lr in e.loras]:
        check_lora_file(path, allow_pickle=config.allow_pickle)
        check_lora_compatible(path, model)
    if config.filter_overrides and config.filter == "none":
        raise ConfigError("--filter-override: thresholds given but --filter is none")
    if config.filter == "none" and any(e.expect for e in manifest.entries):
        log.warning("--filter none: skin tone is not measured, so the entries' expect is not enforced")
    if config.filter != "none":
        from dermgen.filters import FilterConfigError, resolve_overrides

        try:
            resolve_overrides(config.filter_overrides)
        except FilterConfigError as exc:
            raise ConfigError(f"--filter-override: {exc}") from None
        for entry in manifest.entries:
            try:
                resolve_overrides(entry.filter)
            except FilterConfigError as exc:
                raise ConfigError(
                    f"{config.resolved_manifest().name}: entries[{entry.id}].filter: {exc}"
                ) from None
    fingerprint = model_fingerprint(model, allow_pickle=config.allow_pickle)
    resolved = resolve_model(model, allow_pickle=config.allow_pickle, fetch=False)
    if resolved.kind == "single_file" and resolved.path and resolved.path.endswith(".safetensors"):
        from dermgen.single_file import inspect_single_file

        inspect_single_file(resolved.path)  # header-only: a wrong or truncated file fails before GPU work
    return manifest, plan_for(config, manifest), loras, fingerprint


def binding_for(
    config: GenerateConfig, manifest: Manifest, loras: list[LoraSpec], fingerprint: str
) -> dict[str, Any]:
    from dermgen.hashing import sha256_file

    lora_ids = []
    for spec in loras:
        sha = sha256_file(spec.path) if not spec.path.startswith("s3://") else spec.path
        lora_ids.append({"path": spec.path, "scale": spec.scale, "sha256": sha})
    binding = {
        "manifest_sha256": manifest_hash(manifest),
        "model": fingerprint,
        "loras": lora_ids,
        "run_seed": config.seed,
        "limit": config.limit,
        "size": config.size,
        "shard_size": config.shard_size,
        "block": config.resolved_block(),
        "cap_factor": config.cap_factor,
        "filter": {
            "spec": config.filter,
            "overrides": dict(sorted(config.filter_overrides.items())),
            "reference_dir": config.reference_dir,
        },
    }
    if config.resolved_plan_version() != 1:  # v1 bindings (and so run ids) stay exactly as they were
        binding["plan_version"] = config.resolved_plan_version()
    return binding


def resume_plan_settings(config: GenerateConfig, store: Store) -> GenerateConfig:
    """Fill the plan version and block left open (None) from the run already at the output, if any.

    A run made before plan versions existed has none in its binding: it is v1 and keeps v1 on resume.
    New runs get the default version. Explicit values are kept (and checked by `bind_run`).
    """
    try:
        existing = json.loads(store.get(RUN_JSON)).get("binding", {})
    except (KeyError, ValueError):
        return config
    update: dict[str, Any] = {}
    if config.plan_version is None:
        update["plan_version"] = existing.get("plan_version", 1)
    if config.block is None and isinstance(existing.get("block"), int):
        update["block"] = existing["block"]
    return config.model_copy(update=update) if update else config


def effective_filter_of(config: GenerateConfig) -> dict[str, Any]:
    """The run's effective filter (dermgen.filters.identity), recorded in run.json and checked on resume."""
    from dermgen.filters.identity import effective_filter

    return effective_filter(config.filter, config.filter_overrides, config.reference_dir, config.clip_model)


def run_id_for(binding: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(binding, sort_keys=True).encode()).hexdigest()[:16]


def _describe_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    changes = []
    for key in BINDING_FIELDS:
        if old.get(key) != new.get(key):
            changes.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return "; ".join(changes) or "unknown fields"


def _filter_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The filter changes between two run.json (profile content, thresholds, scorers, references, CLIP);
    "" when the same or when the old run predates the record."""
    if "filter" not in old or "filter" not in new:
        return ""
    from dermgen.filters.identity import filter_changes

    return "; ".join(f"filter {c}" for c in filter_changes(old["filter"], new["filter"]))


def bind_run(store: Store, run_json: dict[str, Any], force_new_run: bool) -> None:
    """Create run.json, or check that the existing one was made from the same plan."""
    data = json.dumps(run_json, indent=2, sort_keys=True, default=str).encode()
    if store.put_if_absent(RUN_JSON, data):
        return
    try:
        existing = json.loads(store.get(RUN_JSON))
    except (KeyError, ValueError):
        existing = {}
    if existing.get("binding") == run_json["binding"]:
        changed = _filter_change(existing, run_json)
        if not changed:
            return
    else:
        changed = _describe_change(existing.get("binding", {}), run_json["binding"])
    if not force_new_run:
        raise PlanMismatchError(
            f"{store.uri} already holds run {existing.get('run_id', '?')} made from a different plan "
            f"({changed}); use another --output, or --force-new-run to delete it and start over"
        )
    log.warning("--force-new-run: deleting the existing run at %s", store.uri)
    for prefix in ("shards/", "images/", SUMMARY_JSON):
        store.delete_prefix(prefix)
    store.put(RUN_JSON, data)


def committed_summaries(store: Store) -> dict[str, dict[str, Any]]:
    """Per committed shard, the counts the scheduler needs to resume."""
    out: dict[str, dict[str, Any]] = {}
    for shard_id, table in iter_shard_tables(store, ["entry_id", "index", "status", "kept", "drop_reasons"]):
        rows = table.to_pylist()
        reasons: Counter[str] = Counter()
        for r in rows:
            reasons.update(r["drop_reasons"] or [])
        out[shard_id] = {
            "shard_id": shard_id,
            "entry_id": rows[0]["entry_id"] if rows else shard_id.rsplit("-", 2)[0],
            "planned": len(rows),
            "ok": sum(r["status"] == "ok" for r in rows),
            "kept": sum(bool(r["kept"]) for r in rows),
            "end": max((r["index"] for r in rows), default=-1) + 1,
            "drop_reasons": dict(reasons),
        }
    return out


def warmup_samplers(plan: Plan) -> tuple[str, ...]:
    """Every sampler the plan may use (top-ups too), in a stable order: a compiled UNet is warmed up with each."""
    return tuple(
        sorted({name for e in plan.manifest.entries if plan.targets.get(e.id) for name in e.samplers})
    )


def _common_size(plan: Plan) -> tuple[int, int] | None:
    sizes = Counter((s.samples[0].width, s.samples[0].height) for s in plan.shards if s.samples)
    return sizes.most_common(1)[0][0] if sizes else None


def prepare_run(config: GenerateConfig) -> PreparedRun:
    """Validate, check the output, bind the run and find what is left to do. No GPU work."""
    manifest, plan, loras, fingerprint = validate(config)
    store = open_store(config.output)
    store.check_writable()
    if not config.force_new_run:
        resumed = resume_plan_settings(config, store)
        if resumed is not config:
            config, plan = resumed, plan_for(resumed, manifest)
    binding = binding_for(config, manifest, loras, fingerprint)
    run_id = run_id_for(binding)
    run_json = {
        "run_id": run_id,
        "plan_version": plan.version,
        "binding": binding,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "config": redact(config.model_dump()),
        "manifest": manifest.model_dump(mode="json"),
        "targets": plan.targets,
        "targets_by_label": plan.targets_by_label(),
        "environment": environment(),
        "filter": effective_filter_of(config),
    }
    bind_run(store, run_json, config.force_new_run)
    committed = committed_summaries(store)
    scheduler = ShardScheduler(plan, committed, topup=config.filter != "none")
    opts = WorkerOptions(
        model=model_arg(config, manifest),
        filter=config.filter,
        filter_overrides=dict(config.filter_overrides),
        reference_dir=config.reference_dir,
        clip_model=config.clip_model,
        batch_size=config.batch_size,
        save_dropped=config.save_dropped,
        device=config.device,
        dtype=None if config.dtype == "auto" else config.dtype,
        allow_pickle=config.allow_pickle,
        compile=config.compile or config.cuda_graphs,
        cuda_graphs=config.cuda_graphs,
        global_loras=tuple(loras),
        warmup_size=_common_size(plan) if config.compile or config.cuda_graphs else None,
        warmup_samplers=warmup_samplers(plan),
        noise="cpu" if plan.version == 1 else "device",
    )
    if committed:
        log.info("resuming run %s: %d shard(s) already committed", run_id, len(committed))
    return PreparedRun(config, manifest, plan, store, run_id, binding, opts, scheduler, len(committed))


def _skin_tone_section(run: PreparedRun) -> dict[str, Any]:
    """Kept images per label/entry x skin-tone group and the distribution targets (shortfalls logged)."""
    from dermgen.skintone import skin_tone_summary

    section = skin_tone_summary(run.store, run.manifest)
    for d in section["distribution"]:
        if not d["met"]:
            log.warning(
                "SKIN TONE SHORTFALL %s: %s kept %d of %d (%.3f < %g); %d more image(s) needed",
                d["label"] or "all labels",
                "+".join(d["skin_tone"]),
                d["kept_inside"],
                d["kept"],
                d["fraction"],
                d["min_fraction"],
                d["shortfall"],
            )
    return section


def _write_card(run: PreparedRun) -> None:
    """README.md, the run's dataset card; a failure is logged, never fails the run."""
    from dermgen.card import write_card

    try:
        write_card(run.store)
    except Exception:  # noqa: BLE001 - the card is documentation; the shards are already committed
        log.exception("could not write the dataset card of %s", run.store.uri)


def finalize_run(run: PreparedRun, stats: dict[str, Any]) -> dict[str, Any]:
    """Sweep orphaned attempts and write summary.json; returns the summary."""
    orphans = sweep_orphans(run.store)
    entries = run.scheduler.report()
    by_label: dict[str, dict[str, int]] = {}
    for e in entries.values():
        agg = by_label.setdefault(e["label"], {"target": 0, "kept": 0, "generated": 0, "shortfall": 0})
        for k in agg:
            agg[k] += e[k]
    summary = {
        "run_id": run.run_id,
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "complete": not run.scheduler.shortfalls(),
        "entries": entries,
        "labels": by_label,
        "target": sum(e["target"] for e in entries.values()),
        "kept": sum(min(e["kept"], e["target"]) for e in entries.values()),
        "kept_total": sum(e["kept"] for e in entries.values()),
        "generated": sum(e["generated"] for e in entries.values()),
        "orphans_removed": len(orphans),
        "resumed_shards": run.resumed_shards,
        **stats,
    }
    summary["skin_tone"] = _skin_tone_section(run)
    run.store.put(SUMMARY_JSON, json.dumps(summary, indent=2, sort_keys=True, default=str).encode())
    _write_card(run)
    for entry_id in run.scheduler.shortfalls():
        e = entries[entry_id]
        log.warning(
            "SHORTFALL %s: kept %d of %d after %d samples (cap %d); top drop reasons: %s",
            entry_id,
            e["kept"],
            e["target"],
            e["generated"],
            e["cap"],
            ", ".join(f"{k}={v}" for k, v in sorted(e["drop_reasons"].items(), key=lambda kv: -kv[1])[:3]),
        )
    return summary
