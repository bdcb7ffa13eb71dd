"""Subcommands other than `generate`: filter, inspect, verify, report, preprocess, train-lora, merge-lora,
validate, card, audit. Each has a small pydantic model of its options (`dermgen.cli` derives the argparse options from
it); a command receives the validated options."""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict

from pydantic import BaseModel, ConfigDict, Field

from dermgen.errors import VerifyError
from dermgen.rundir.parallel import READ_WORKERS

_READERS = "objects read at once (shards; PNGs for verify): bounded, so memory stays flat"


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InspectOptions(_Options):
    uri: str = Field(description="run folder or s3://bucket/prefix")
    as_json: bool = Field(False, alias="json", description="print JSON")
    workers: int = Field(READ_WORKERS, gt=0, le=256, description=_READERS)


class VerifyOptions(_Options):
    uri: str = Field(description="run folder or s3://bucket/prefix")
    as_json: bool = Field(False, alias="json", description="print JSON")
    skip_images: bool = Field(False, description="do not read the PNG objects (faster on S3)")
    workers: int = Field(READ_WORKERS, gt=0, le=256, description=_READERS)


class FilterOptions(_Options):
    input: str = Field(description="folder of images (recursive) or a generation run (folder or s3://)")
    output: str = Field(description="Parquet file to write")
    reference: str | None = Field(None, description="folder of fine-tuning images (memorisation check)")
    filter: str = Field(
        "default", description="thresholds: default, or a profile YAML from `dermgen filter calibrate`"
    )
    filter_override: list[tuple[str, float | None]] = Field(
        default_factory=list,
        description="override a filter threshold, e.g. ink=0.1 or ruler=none (repeatable)",
    )
    workers: int | None = Field(None, gt=0, description="processes (default: all cores)")


class ReportOptions(_Options):
    uri: str = Field(description="run folder or s3://bucket/prefix")
    output: str | None = Field(None, description="folder for index.html (default: <uri>/report when local)")
    workers: int = Field(READ_WORKERS, gt=0, le=256, description=_READERS)


class CardOptions(_Options):
    uri: str = Field(description="run folder or s3://bucket/prefix")
    license: str = Field("other", description="license id for the card's YAML header")


class AuditOptions(_Options):
    input: str = Field(description="a generation run (folder or s3://) or a folder of images")
    output: str = Field(description="folder for audit.parquet, baseline.parquet, summary.json, index.html")
    reference: str | None = Field(
        None,
        description="folder of reference images or a local run (default: the training folder named in the "
        "cards of the run's LoRA adapters)",
    )
    max_baseline: int = Field(
        500, gt=1, description="reference images measured against the others (baseline)"
    )


class PreprocessOptions(_Options):
    input: str = Field(description="folder laid out <root>/<label>/* or a generation run")
    output: str = Field(description="output folder")
    resolution: int = Field(512, gt=0, description="side of the square output images")
    keep_hair: bool = Field(False, description="skip hair removal")
    workers: int | None = Field(None, gt=0, description="processes (default: all cores)")


def cmd_inspect(args: argparse.Namespace) -> int:
    from dermgen.rundir import RunDir
    from dermgen.skintone import format_tone_table, skin_tone_summary

    rd = RunDir.open(args.uri)
    info = rd.info()
    summaries = rd.shard_summaries(workers=args.workers)
    per_entry: dict[str, Counter] = defaultdict(Counter)
    per_label: dict[str, Counter] = defaultdict(Counter)
    reasons: Counter = Counter()
    for sm in summaries.values():
        reasons.update(sm.drop_reasons)
        for label, c in sm.per_label.items():
            per_label[label].update(c)
            per_entry[sm.entry_id].update(c)
    plan = info.plan() if info.has_plan else None
    committed = set(summaries)
    base = {s.shard_id for s in plan.shards} if plan else set(committed)
    by_label = plan.targets_by_label() if plan else {}
    targets = plan.targets if plan else {}
    summary = rd.summary()
    if info.kind == "packed":
        status = "packed from a folder of images (no generation plan)"
    elif summary is None:
        status = "in progress or interrupted (no summary.json)"
    else:
        status = "complete" if summary.get("complete") else "finished with a shortfall"
    rows = sum(sm.planned for sm in summaries.values())

    def counts(c: Counter, target: int) -> dict:
        return dict(
            {k: c.get(k, 0) for k in ("rows", "kept", "dropped", "failed")},
            target=target,
            shortfall=max(0, target - c.get("kept", 0)),
        )

    out = {
        "uri": rd.uri,
        "run_id": info.run_id,
        "images": info.images,
        "status": status,
        "rows": rows,
        "kept": sum(c["kept"] for c in per_label.values()),
        "dropped": sum(c["dropped"] for c in per_label.values()),
        "failed": sum(c["failed"] for c in per_label.values()),
        "target": plan.total_target if plan else sum(c["kept"] for c in per_label.values()),
        "shards_committed": len(committed),
        "shards_planned": len(base),
        "shards_topup": len(committed - base),
        "shards_missing": sorted(base - committed),
        "drop_reasons": dict(reasons.most_common()),
        "labels": {
            k: counts(per_label[k], by_label.get(k, 0)) for k in sorted(set(by_label) | set(per_label))
        },
        "entries": {k: counts(per_entry[k], targets.get(k, 0)) for k in (targets or sorted(per_entry))},
    }
    out["skin_tone"] = skin_tone_summary(rd, info.manifest or {}, workers=args.workers)
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    print(f"run {out['run_id']} at {out['uri']}: {status}")
    print(
        f"rows {out['rows']:,d}: kept {out['kept']:,d} (target {out['target']:,d}), dropped {out['dropped']:,d}, "
        f"failed {out['failed']:,d}"
    )
    print(
        f"shards: {out['shards_committed']} committed ({len(base & committed)} of {len(base)} planned "
        f"+ {out['shards_topup']} top-up), {len(out['shards_missing'])} planned not yet committed"
    )
    width = max([len(k) for k in out["entries"]] + [len(k) for k in out["labels"]] + [5])
    cols = ("target", "rows", "kept", "dropped", "failed", "kept %", "shortfall")
    for title, table_ in (("label", out["labels"]), ("entry", out["entries"])):
        print()
        print(f"{title:{width}s} " + " ".join(f"{c:>9s}" for c in cols))
        for k, v in table_.items():
            pct = f"{100 * v['kept'] / v['rows']:.1f}%" if v["rows"] else "-"
            nums = [f"{v[c]:>9,d}" for c in ("target", "rows", "kept", "dropped", "failed")]
            print(f"{k:{width}s} " + " ".join(nums) + f" {pct:>9s} {v['shortfall']:>9,d}")
    if reasons:
        print()
        print("drop reasons: " + ", ".join(f"{k} {n:,d}" for k, n in reasons.most_common(10)))
    if out["skin_tone"]["kept_by_label"] or out["skin_tone"]["dropped_skin_tone_by_entry"]:
        print()
        print(format_tone_table(out["skin_tone"]))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from dermgen.rundir import RunDir
    from dermgen.verify import verify_run

    report = verify_run(RunDir(args.uri), check_images=not args.skip_images, workers=args.workers)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"verify {report.uri}: {report.shards} shards, {report.rows} rows, "
            f"{report.images_checked} images checked, "
            f"{len(report.missing_shards)} planned shards not yet committed"
        )
        for p in report.problems:
            print(f"PROBLEM {p}")
        print("OK" if report.ok else f"{len(report.problems)} problem(s)")
    if not report.ok:
        raise VerifyError(f"{len(report.problems)} problem(s) in {report.uri}")
    return 0


def cmd_filter(args: argparse.Namespace) -> int:
    from dermgen.filters.standalone import filter_source

    summary = filter_source(
        args.input,
        args.output,
        reference_dir=args.reference,
        overrides=dict(args.filter_override),
        workers=args.workers,
        preset=args.filter,
    )
    print(json.dumps(summary, sort_keys=True))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from dermgen.report import build_report

    path = build_report(args.uri, args.output, workers=args.workers)
    print(path)
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from dermgen.preprocess import preprocess_source

    summary = preprocess_source(
        args.input,
        args.output,
        resolution=args.resolution,
        remove_hair=not args.keep_hair,
        workers=args.workers,
    )
    print(json.dumps(summary, sort_keys=True))
    return 0


def cmd_train_lora(config, *, as_json: bool = False) -> int:
    """`dermgen train-lora`: DreamBooth + LoRA fine-tuning (`dermgen.train.lora.train_lora`)."""
    from dermgen.models import quiet_hf_logging
    from dermgen.train.lora import train_lora

    quiet_hf_logging()
    r = train_lora(config)
    if as_json:
        print(json.dumps(r.to_dict(), indent=2))
    elif r.interrupted:
        print(f"stopped at step {r.steps}/{r.total_steps}; continue with --resume ({r.output})")
    else:
        loss = "n/a" if r.final_loss is None else f"{r.final_loss:.4f}"
        print(f"trained {r.steps} steps in {r.seconds:.0f}s, final loss {loss}: {r.weights} ({r.card})")
    return 0


def cmd_merge_lora(config) -> int:
    """`dermgen merge-lora`: bake adapters into one checkpoint (`dermgen.train.merge.merge_lora`)."""
    from dermgen.models import quiet_hf_logging
    from dermgen.train.merge import merge_from_config

    quiet_hf_logging()
    print(json.dumps(merge_from_config(config), indent=2, sort_keys=True))
    return 0


def cmd_validate(config) -> int:
    """`dermgen validate`: baseline vs hybrid classifiers (`dermgen.train.classifier.run_validation`)."""
    from pathlib import Path

    from dermgen.train.classifier import render_table, run_validation

    metrics = run_validation(config)
    print(render_table(metrics))
    print(f"wrote {Path(config.output) / 'metrics.json'}, table.md, curves.png")
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    """`dermgen card`: write (or refresh) README.md, the run's Hugging Face dataset card."""
    from dermgen.card import write_card

    print(write_card(args.uri, license=args.license))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """`dermgen audit`: nearest reference image of every generated image, baseline, HTML report."""
    from dermgen.audit import audit

    summary = audit(args.input, args.output, args.reference, max_baseline=args.max_baseline)
    print(json.dumps(summary, sort_keys=True))
    return 0
