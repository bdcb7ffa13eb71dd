"""The `dermgen` command line: generate, filter, inspect, verify, report, preprocess.

Exit codes: 0 success; 1 unexpected error; 2 bad input (manifest, arguments, model, LoRA);
3 output store problem; 4 output holds a run made from a different plan; 5 verify found problems;
6 the run failed (actors could not start, a shard kept failing).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from dermgen import __version__
from dermgen.errors import ConfigError, DermgenError

log = logging.getLogger("dermgen")

GENERATE_EXAMPLES = """examples:
  dermgen generate --model tiny --limit 16 --size 64 --output /tmp/smoke
  dermgen generate --manifest manifests/derm_t2im_6k.yaml --output s3://my-bucket/derm-6k
  dermgen generate --lora adapters/pytorch_lora_weights.safetensors:0.8 --limit 100 --output runs/lora
  dermgen generate --dry-run
"""


def _filter_spec(text: str) -> str:
    if text in ("default", "none") or text.lower().endswith((".yaml", ".yml")):
        return text
    raise argparse.ArgumentTypeError(f"expected default, none or a filter profile *.yaml file, got {text!r}")


def _filter_override(text: str) -> tuple[str, float | None]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE or NAME=none, got {text!r}")
    if value.lower() in ("none", "off", "null"):
        return key, None
    try:
        return key, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"threshold {key!r}: expected a number or 'none', got {value!r}"
        ) from None


def add_generate_args(
    p: argparse.ArgumentParser, *, default_manifest: str | None = None, default_output: str | None = None
) -> None:
    p.add_argument(
        "--manifest",
        default=default_manifest or "manifests/derm_t2im_6k.yaml",
        help="YAML prompt manifest (default: %(default)s)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="derm-t2im | tiny | local diffusers folder or .safetensors | s3:// URI "
        "(default: the manifest's model, else derm-t2im)",
    )
    p.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="PATH[:SCALE]",
        help="LoRA adapter applied to every entry, with merge scale beta (repeatable)",
    )
    p.add_argument(
        "--output", default=default_output or "outputs/derm-6k", help="local folder or s3://bucket/prefix"
    )
    p.add_argument(
        "--limit", type=int, default=None, help="shrink the manifest to N kept images, proportionally"
    )
    p.add_argument(
        "--size", type=int, default=None, help="override every entry's size (square, multiple of 8)"
    )
    p.add_argument(
        "--filter",
        default="default",
        type=_filter_spec,
        metavar="{default,none,PROFILE.yaml}",
        help="noise filter: a preset or a profile from `dermgen filter calibrate` (default: %(default)s)",
    )
    p.add_argument(
        "--filter-override",
        action="append",
        type=_filter_override,
        default=[],
        metavar="NAME=VALUE",
        help="override a filter threshold for the whole run, e.g. ink=0.1 or ruler=none",
    )
    p.add_argument(
        "--reference",
        dest="reference_dir",
        default=None,
        help="folder of fine-tuning images; near copies of them are dropped (memorisation)",
    )
    p.add_argument("--clip-model", default=None, help="local CLIP model folder for the optional CLIP score")
    p.add_argument(
        "--no-save-dropped",
        dest="save_dropped",
        action="store_false",
        help="do not keep dropped images for audit under images/dropped/",
    )
    p.add_argument(
        "--cap-factor",
        type=float,
        default=3.0,
        help="most samples per entry, as a multiple of its kept target (default: %(default)s)",
    )
    p.add_argument("--num-actors", type=int, default=None, help="generator actors (default: one per GPU)")
    p.add_argument(
        "--cpus-per-actor",
        type=float,
        default=1.0,
        help="CPUs reserved per actor; on CPU-only machines also its torch threads (default: %(default)s)",
    )
    p.add_argument("--shard-size", type=int, default=64, help="samples per shard (default: %(default)s)")
    p.add_argument(
        "--batch-size", type=int, default=8, help="images per diffusion batch (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="run seed (default: %(default)s)")
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    p.add_argument("--dtype", choices=["auto", "fp16", "bf16", "fp32"], default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet (warm-up at actor start)")
    p.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="also capture the compiled UNet in CUDA graphs (implies --compile; CUDA only)",
    )
    p.add_argument("--allow-pickle", action="store_true", help="allow pickled .ckpt/.bin checkpoints")
    p.add_argument(
        "--force-new-run",
        action="store_true",
        help="delete a run at --output made from a different plan, and start over",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and write nothing")
    p.add_argument(
        "--no-ray", dest="use_ray", action="store_false", help="run in this process without Ray (one worker)"
    )
    p.add_argument(
        "--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)"
    )
    p.add_argument(
        "--progress-interval",
        type=float,
        default=10.0,
        help="seconds between progress lines when not on a terminal (default: %(default)s)",
    )


# argparse destinations of `generate` that are not GenerateConfig fields (handled by the command itself).
NOT_CONFIG_ARGS = {"command", "func", "verbose", "use_ray", "filter_override"}


def config_from_args(args: argparse.Namespace):
    """Every generate option becomes the GenerateConfig field of the same name (validated there; the model
    forbids unknown fields, so an option without a field fails loudly instead of being dropped)."""
    from dermgen.config import make_config

    values = {k: v for k, v in vars(args).items() if k not in NOT_CONFIG_ARGS}
    return make_config(**values, filter_overrides=dict(args.filter_override))


# Rough per-GPU rate for SD 1.5 at 512x512, 20 steps, CFG, fp16 on a current data-centre GPU.
EST_IMAGES_PER_GPU_S = 8.0


def dry_run(config) -> int:
    from dermgen.run import model_arg, validate

    manifest, plan, loras, _ = validate(config)
    print(f"manifest {manifest.name}: {len(manifest.entries)} entries, model {model_arg(config, manifest)}")
    print(f"{'entry':40s} {'label':10s} {'kept target':>11s} {'shards':>7s} {'size':>9s}  samplers / steps")
    for e in manifest.entries:
        n = plan.targets.get(e.id, 0)
        shards = sum(1 for s in plan.shards if s.entry_id == e.id)
        w, h = (plan.size, plan.size) if plan.size else e.width_height
        lo, hi = e.steps_bounds
        steps = str(lo) if lo == hi else f"{lo}-{hi}"
        print(
            f"{e.id:40s} {e.label:10s} {n:>11,d} {shards:>7d} {w:>4d}x{h:<4d}  {', '.join(e.samplers)} / {steps}"
        )
    by_label = plan.targets_by_label()
    total = plan.total_target
    print(
        f"total: {total:,d} planned kept images ("
        + ", ".join(f"{k} {v:,d}" for k, v in sorted(by_label.items()))
        + f") in {len(plan.shards)} shards"
    )
    mean_steps = sum(sum(e.steps_bounds) / 2 * plan.targets.get(e.id, 0) for e in manifest.entries) / max(
        1, total
    )
    pixels = sum(
        ((plan.size or e.width_height[0]) * (plan.size or e.width_height[1]) / 512**2)
        * plan.targets.get(e.id, 0)
        for e in manifest.entries
    ) / max(1, total)
    est_images = total * (1.15 if config.filter != "none" else 1.0)  # expected top-up for dropped images
    gpu_hours = est_images * (mean_steps / 20) * pixels / EST_IMAGES_PER_GPU_S / 3600
    print(
        f"estimated GPU-hours: {gpu_hours:.2f} (assumes {EST_IMAGES_PER_GPU_S:g} images/s per GPU at 512px/20 steps"
        f"{', ~15% extra samples to replace filtered ones' if config.filter != 'none' else ''})"
    )
    print("dry run: nothing written")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if config.dry_run:
        return dry_run(config)
    from dermgen.runner import generate

    summary = generate(config, use_ray=args.use_ray)
    labels = ", ".join(f"{k} {v['kept']}/{v['target']}" for k, v in sorted(summary["labels"].items()))
    print(
        f"run {summary['run_id']} at {config.output}: kept {labels}; generated {summary['generated']} "
        f"in {summary.get('elapsed_s', 0):.1f}s"
    )
    if not summary["complete"]:
        short = {k: v["shortfall"] for k, v in summary["entries"].items() if v["shortfall"]}
        print(f"SHORTFALL: targets not met within the cap for {short}; see summary.json", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dermgen",
        description="Generate, filter, check and inspect synthetic skin-lesion datasets.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dermgen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser(
        "generate",
        help="render a manifest into Parquet + PNG shards",
        epilog=GENERATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_generate_args(g)
    g.set_defaults(func=cmd_generate)

    from dermgen import commands

    commands.register(sub)
    return parser


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "filelock", "httpx", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["filter", "calibrate"]:  # `dermgen filter calibrate LABELS.json --output profile.yaml`
        from dermgen.filters.calibrate import main as calibrate_main

        return calibrate_main(argv[2:])
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except DermgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback with -v
        if args.verbose:
            log.exception("unexpected error")
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"error: unexpected {type(exc).__name__}: {first} (run with -v for the traceback)",
            file=sys.stderr,
        )
        return 1


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


__all__ = ["main", "build_parser", "add_generate_args", "config_from_args", "ConfigError"]
