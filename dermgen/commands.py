"""Subcommands other than `generate`: filter, inspect, verify, report, preprocess."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict

from dermgen.errors import VerifyError


def cmd_inspect(args: argparse.Namespace) -> int:
    from dermgen.shards import RUN_JSON, SUMMARY_JSON, read_rows
    from dermgen.store import open_store
    from dermgen.verify import _plan_from_run_json

    store = open_store(args.uri)
    try:
        run = json.loads(store.get(RUN_JSON))
    except KeyError:
        print(f"error: {args.uri} holds no run.json", file=sys.stderr)
        return 3
    table = read_rows(store, ["shard_id", "entry_id", "label", "status", "kept", "drop_reasons"])
    rows = table.to_pylist()
    per_entry: dict[str, Counter] = defaultdict(Counter)
    per_label: dict[str, Counter] = defaultdict(Counter)
    reasons: Counter = Counter()
    for r in rows:
        if not r["kept"]:
            reasons.update(r["drop_reasons"] or [])
        for c in (per_entry[r["entry_id"]], per_label[r["label"]]):
            c["rows"] += 1
            c["kept"] += bool(r["kept"])
            c["failed"] += r["status"] != "ok"
            c["dropped"] += r["status"] == "ok" and not r["kept"]
    plan = _plan_from_run_json(run)
    committed = {r["shard_id"] for r in rows}
    base = {s.shard_id for s in plan.shards}
    by_label = plan.targets_by_label()
    try:
        summary = json.loads(store.get(SUMMARY_JSON))
        status = "complete" if summary.get("complete") else "finished with a shortfall"
    except (KeyError, ValueError):
        status = "in progress or interrupted (no summary.json)"

    def counts(c: Counter, target: int) -> dict:
        return dict(
            {k: c.get(k, 0) for k in ("rows", "kept", "dropped", "failed")},
            target=target,
            shortfall=max(0, target - c.get("kept", 0)),
        )

    out = {
        "uri": store.uri,
        "run_id": run.get("run_id"),
        "status": status,
        "rows": len(rows),
        "kept": sum(c["kept"] for c in per_label.values()),
        "dropped": sum(c["dropped"] for c in per_label.values()),
        "failed": sum(c["failed"] for c in per_label.values()),
        "target": plan.total_target,
        "shards_committed": len(committed),
        "shards_planned": len(base),
        "shards_topup": len(committed - base),
        "shards_missing": sorted(base - committed),
        "drop_reasons": dict(reasons.most_common()),
        "labels": {
            k: counts(per_label[k], by_label.get(k, 0)) for k in sorted(set(by_label) | set(per_label))
        },
        "entries": {k: counts(per_entry[k], plan.targets.get(k, 0)) for k in plan.targets},
    }
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
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from dermgen.store import open_store
    from dermgen.verify import verify_run

    report = verify_run(open_store(args.uri), check_images=not args.skip_images)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"verify {report.uri}: {report.shards} shards, {report.rows} rows, {report.images_checked} PNGs checked, "
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
    )
    print(json.dumps(summary, sort_keys=True))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from dermgen.report import build_report

    path = build_report(args.uri, args.output)
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


def cmd_audit(args: argparse.Namespace) -> int:
    from dermgen.audit import audit

    summary = audit(args.input, args.output, args.reference, max_baseline=args.max_baseline)
    print(json.dumps(summary, sort_keys=True))
    return 0


def register_audit(sub) -> None:
    """`dermgen audit`: nearest reference image of every generated image, baseline, HTML report."""
    p = sub.add_parser(
        "audit",
        help="memorisation audit: nearest reference image of every generated image, with an HTML report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  dermgen audit outputs/derm-6k --reference ./isic-train --output audit/\n"
        "  dermgen audit ./Derm-T2IM-Dataset --reference ./isic --output audit/\n"
        "  dermgen audit outputs/derm-6k --output audit/   # the training folder of the run's LoRA adapters",
    )
    p.add_argument("input", help="a generation run (folder or s3://) or a folder of images")
    p.add_argument(
        "--reference",
        default=None,
        help="folder of reference images or a local run (default: the training folder named in the cards "
        "of the run's LoRA adapters)",
    )
    p.add_argument("--output", required=True, help="folder for audit.parquet, baseline.parquet, index.html")
    p.add_argument(
        "--max-baseline",
        type=int,
        default=500,
        help="reference images measured against the others (baseline)",
    )
    p.set_defaults(func=cmd_audit)


def register(sub) -> None:
    from dermgen.cli import _filter_override

    register_audit(sub)

    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "filter",
        help="score images and write keep/drop decisions with reasons",
        formatter_class=fmt,
        epilog="examples:\n  dermgen filter ./Derm-T2IM-Dataset --output scores.parquet\n"
        "  dermgen filter s3://bucket/derm-6k --output rescored.parquet --reference ./isic\n"
        "exit status 0 whatever was kept.",
    )
    p.add_argument("input", help="folder of images (recursive) or a generation run (folder or s3://)")
    p.add_argument("--output", required=True, help="Parquet file to write")
    p.add_argument("--reference", default=None, help="folder of fine-tuning images (memorisation check)")
    p.add_argument(
        "--filter-override", action="append", type=_filter_override, default=[], metavar="NAME=VALUE"
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(func=cmd_filter)

    p = sub.add_parser(
        "inspect",
        help="summary of a run: rows, kept per label and entry, shards",
        formatter_class=fmt,
        epilog="example:\n  dermgen inspect outputs/derm-6k",
    )
    p.add_argument("uri")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "verify",
        help="check a run's integrity; exit 5 on any problem",
        formatter_class=fmt,
        epilog="examples:\n  dermgen verify outputs/derm-6k\n  dermgen verify s3://bucket/derm-6k --json",
    )
    p.add_argument("uri")
    p.add_argument("--json", action="store_true")
    p.add_argument("--skip-images", action="store_true", help="do not read the PNG objects (faster on S3)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a run",
        formatter_class=fmt,
        epilog="example:\n  dermgen report outputs/derm-6k --output report/",
    )
    p.add_argument("uri")
    p.add_argument("--output", default=None, help="folder for index.html (default: <uri>/report when local)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "preprocess",
        help="resize/crop and remove hair (DullRazor) for fine-tuning",
        formatter_class=fmt,
        epilog="example:\n  dermgen preprocess isic/ isic-512/ --resolution 512",
    )
    p.add_argument("input", help="folder laid out <root>/<label>/* or a generation run")
    p.add_argument("output")
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--keep-hair", action="store_true", help="skip hair removal")
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(func=cmd_preprocess)
