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
from pathlib import Path
from typing import Any

from dermgen.config import GenerateConfig
from dermgen.errors import ConfigError, PlanMismatchError, StoreError
from dermgen.leases import ShardLeases
from dermgen.manifest import Manifest, load_manifest, manifest_hash
from dermgen.models import model_fingerprint, resolve_model
from dermgen.pipeline import LoraSpec, check_lora_compatible, check_lora_file
from dermgen.plan import Plan, plan_run
from dermgen.prompts import warn_truncated
from dermgen.provenance import environment, redact
from dermgen.rundir import RunDir, RunInfo, shard_key
from dermgen.scheduler import ShardScheduler
from dermgen.store import Store, open_store
from dermgen.tiny import TINY_DEFAULT_SIZE
from dermgen.uri import is_s3
from dermgen.worker import WorkerOptions

log = logging.getLogger(__name__)

BINDING_FIELDS = (
    "manifest_sha256",
    "model",
    "loras",
    "manifest_loras",
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
    leases: ShardLeases | None = None  # this driver's shard claims (released by `close`)
    resumed_shards: int = 0
    started: float = field(default_factory=time.time)

    def close(self) -> None:
        """Stop renewing and release this driver's shard claims (after the run, or when it fails)."""
        if self.leases is not None:
            self.leases.close()


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
    named = [("--lora", s.path) for s in loras]
    named += [(f"manifest entries[{e.id}].loras", lr.path) for e in manifest.entries for lr in e.loras]
    for arg, path in named:
        if not is_s3(path) and Path(path).expanduser().is_dir():
            raise ConfigError(
                f"{arg}: {path!r} is a folder; expected a .safetensors LoRA file "
                "(e.g. the pytorch_lora_weights.safetensors inside it)"
            )
        if not is_s3(path) and not Path(path).expanduser().exists():
            raise ConfigError(f"{arg}: {path!r} does not exist; expected a .safetensors LoRA file")
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
    warn_truncated(manifest.entries)
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

    def bound(path: str, scale: float) -> dict[str, Any]:
        return {"path": path, "scale": scale, "sha256": path if is_s3(path) else sha256_file(path)}

    manifest_loras = {(lr.path, float(lr.scale)) for e in manifest.entries for lr in e.loras}
    binding = {
        "manifest_sha256": manifest_hash(manifest),
        "model": fingerprint,
        "loras": [bound(spec.path, spec.scale) for spec in loras],
        # adapters named in the manifest decide pixels too: bound by content, not just by path
        "manifest_loras": [bound(path, scale) for path, scale in sorted(manifest_loras)],
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
    info = RunDir(store).info_or_none()
    if info is None or info.binding is None:
        return config
    update: dict[str, Any] = {}
    if config.plan_version is None:
        update["plan_version"] = info.binding.plan_version or 1
    if config.block is None:
        update["block"] = info.binding.block
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


def check_output(rd: RunDir, force_new_run: bool) -> None:
    """Refuse (StoreError, exit 3) an output that holds anything but a dermgen run, before any work.

    An empty or new output, or one holding a dermgen run.json, passes. Shards or PNGs without run.json
    (run.json lost) are refused with the ways to recover; other files are refused unless
    --force-new-run, and even then never deleted.
    """
    listing = rd.listing()
    if listing.run_json:
        rd.info()  # StoreError if it is not a dermgen run.json
        return
    if listing.empty:
        return
    if listing.shards or listing.images:
        if not force_new_run:
            raise StoreError(
                f"--output: {rd.uri} holds {len(listing.shards)} shard(s) and {len(listing.images)} image(s) "
                "but no run.json, so they cannot be tied to a plan. To recover, restore run.json (from a "
                "backup or a copy of the run) and re-run the same command; or pass --force-new-run to delete "
                "those shards and the images of their run and start over; or choose another --output"
            )
        log.warning("--force-new-run: deleting shards and images without run.json at %s", rd.uri)
        rd.delete_run(set())
        return
    if not force_new_run:
        shown = ", ".join(listing.strays[:3]) + (", ..." if len(listing.strays) > 3 else "")
        raise StoreError(
            f"--output: {rd.uri} is not empty and holds no dermgen run ({len(listing.strays)} other "
            f"file(s): {shown}); choose a new or empty --output, or pass --force-new-run to write the run "
            "beside them (they are never modified or deleted)"
        )


def _filter_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The filter changes between two run.json (profile content, thresholds, scorers, references, CLIP);
    "" when the same or when the old run predates the record."""
    if "filter" not in old or "filter" not in new:
        return ""
    from dermgen.filters.identity import filter_changes

    return "; ".join(f"filter {c}" for c in filter_changes(old["filter"], new["filter"]))


def _layout_change(old: RunInfo, new: RunInfo) -> str:
    """The image layout change between two run.json ("" when the same): the shards already committed keep
    their images one way, so a run cannot switch layout half way."""
    return "" if old.images == new.images else f"images: {old.images!r} -> {new.images!r}"


def bind_run(store: Store, run_json: dict[str, Any], force_new_run: bool) -> str:
    """Create run.json, or check that the existing one was made from the same plan. Returns the bound
    run_id (an existing run keeps its own, even if written by a version that hashed fewer fields)."""
    rd = RunDir(store)
    info = RunInfo.model_validate(run_json)
    if rd.write_info(info, create=True):
        return info.run_id
    existing = rd.info()
    if existing.binding is not None and existing.binding.model_dump() == info.binding.model_dump():
        # the filter decides which images are kept: a resume must use the same one (absent in older runs)
        changed = _filter_change(existing.model_dump(mode="json"), run_json) or _layout_change(existing, info)
        if not changed:
            return existing.run_id
    else:
        old = existing.binding.model_dump(mode="json") if existing.binding else {}
        changed = _describe_change(old, info.binding.model_dump(mode="json"))
        changed += f"; {_layout_change(existing, info)}" if _layout_change(existing, info) else ""
    if not force_new_run:
        raise PlanMismatchError(
            f"{store.uri} already holds run {existing.run_id} made from a different plan "
            f"({changed}); use another --output, or --force-new-run to delete it and start over"
        )
    log.warning("--force-new-run: deleting the existing run at %s", store.uri)
    rd.delete_run({existing.run_id})
    rd.write_info(info, create=False)
    return info.run_id


def committed_summaries(store: Store, run_id: str | None = None) -> dict[str, dict[str, Any]]:
    """Per committed shard, the counts the scheduler needs to resume. With `run_id`, a shard holding rows
    of another run is refused (StoreError): it is never adopted."""
    out: dict[str, dict[str, Any]] = {}
    for shard_id, summary in RunDir(store).shard_summaries().items():
        if run_id is not None and summary.run_ids and summary.run_ids != (run_id,):
            raise StoreError(
                f"{store.url(shard_key(shard_id))} holds rows of run(s) {', '.join(summary.run_ids)}, not of "
                f"run {run_id} bound at this output; it was copied in from another run. Move it away, or "
                "pass --force-new-run to delete this run and start over"
            )
        out[shard_id] = summary.as_dict()
    return out


def warmup_samplers(plan: Plan) -> tuple[str, ...]:
    """Every sampler the plan may use (top-ups too), in a stable order: a compiled UNet is warmed up with each."""
    return tuple(
        sorted({name for e in plan.manifest.entries if plan.targets.get(e.id) for name in e.samplers})
    )


def _common_size(plan: Plan) -> tuple[int, int] | None:
    """The (width, height) most of the plan's images have, from the entries' targets (no sample is built)."""
    sizes: Counter[tuple[int, int]] = Counter()
    for e in plan.manifest.entries:
        if plan.targets.get(e.id):
            sizes[(plan.size, plan.size) if plan.size else e.width_height] += plan.targets[e.id]
    return sizes.most_common(1)[0][0] if sizes else None


def prepare_run(config: GenerateConfig) -> PreparedRun:
    """Validate, check the output, bind the run and find what is left to do. No GPU work."""
    manifest, plan, loras, fingerprint = validate(config)
    store = open_store(config.output)
    store.check_writable()  # the probe it writes is removed at once
    check_output(RunDir(store), config.force_new_run)
    if not config.force_new_run:
        resumed = resume_plan_settings(config, store)
        if resumed is not config:
            config, plan = resumed, plan_for(resumed, manifest)
    binding = binding_for(config, manifest, loras, fingerprint)
    run_id = run_id_for(binding)
    run_json = {
        "run_id": run_id,
        "kind": "generated",
        "plan_version": plan.version,
        "binding": binding,
        "plan_size": plan.size,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "config": redact(config.model_dump()),
        "manifest": manifest.model_dump(mode="json"),
        "targets": plan.targets,
        "targets_by_label": plan.targets_by_label(),
        "environment": environment(),
        "filter": effective_filter_of(config),
        "images": config.images,
    }
    run_id = bind_run(store, run_json, config.force_new_run)
    committed = committed_summaries(store, run_id)
    # claims let a second driver on this output work on other shards (dermgen.leases)
    leases = ShardLeases(store, run_id, config.claim_lease_s, config.claim_renew_s)
    scheduler = ShardScheduler(plan, committed, topup=config.filter != "none", gate=leases)
    opts = WorkerOptions(
        model=model_arg(config, manifest),
        filter=config.filter,
        filter_overrides=dict(config.filter_overrides),
        reference_dir=config.reference_dir,
        clip_model=config.clip_model,
        batch_size=config.batch_size,
        save_dropped=config.save_dropped,
        images=config.images,
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
    return PreparedRun(
        config, manifest, plan, store, run_id, binding, opts, scheduler, leases, resumed_shards=len(committed)
    )


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
    except StoreError as exc:  # e.g. a README.md that is not ours: left as it is
        log.warning("dataset card not written: %s", exc)
    except Exception:  # noqa: BLE001 - the card is documentation; the shards are already committed
        log.exception("could not write the dataset card of %s", run.store.uri)


def finalize_run(run: PreparedRun, stats: dict[str, Any]) -> dict[str, Any]:
    """Release this driver's claims, sweep orphaned attempts (never those of shards another driver holds
    a live claim on) and write summary.json; returns the summary."""
    run.close()
    rd = RunDir(run.store)
    orphans = rd.sweep_orphans(run.run_id, {e.id for e in run.manifest.entries})
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
        "committed_shards": rd.shard_ids(),
        "resumed_shards": run.resumed_shards,
        "adopted_shards": run.scheduler.adopted,
        **(run.leases.stats() if run.leases is not None else {}),
        **stats,
    }
    summary["skin_tone"] = _skin_tone_section(run)
    rd.write_summary(summary)
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
