"""The `dermgen` command: every job is a subcommand whose options come from its pydantic config.

    generate    render a manifest into Parquet + PNG shards           (GenerateConfig)
    filter      score images, write keep/drop decisions               (commands.FilterOptions)
    inspect     summary of a run                                      (commands.InspectOptions)
    verify      check a run's integrity                               (commands.VerifyOptions)
    report      self-contained HTML report of a run                   (commands.ReportOptions)
    card        write or refresh the run's dataset card (README.md)   (commands.CardOptions)
    audit       memorisation audit against reference images           (commands.AuditOptions)
    preprocess  resize/crop and hair removal for fine-tuning          (commands.PreprocessOptions)
    train-lora  DreamBooth + LoRA fine-tuning                         (train.lora.LoraTrainConfig)
    merge-lora  bake LoRA adapters into one checkpoint                (train.merge.MergeLoraConfig)
    validate    baseline vs hybrid classifier validation (Table IV)  (train.classifier.ClassifierConfig)

`jobs/*.py` are the `ray job submit` entry points and call `main` with their subcommand. Library code never
imports this module; the shared plumbing (options from models, the error wrapper) is `dermgen.console`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from dermgen import __version__, commands
from dermgen.config import GenerateConfig
from dermgen.console import (
    EXIT_CODES_TEXT,
    add_model_options,
    add_verbose,
    csv_list,
    int_list,
    model_from_args,
    name_value,
    run_command,
)
from dermgen.errors import ConfigError

EXAMPLES = {
    "generate": """
  dermgen generate --model tiny --limit 16 --size 64 --output /tmp/smoke
  dermgen generate --manifest manifests/derm_t2im_6k.yaml --output s3://my-bucket/derm-6k
  dermgen generate --lora adapters/pytorch_lora_weights.safetensors:0.8 --limit 100 --output runs/lora
  dermgen generate --dry-run
  ray job submit --working-dir . -- python jobs/generate_6k.py --output s3://bucket/derm-6k""",
    "filter": """
  dermgen filter ./Derm-T2IM-Dataset --output scores.parquet
  dermgen filter s3://bucket/derm-6k --output rescored.parquet --reference ./isic
  dermgen filter outputs/derm-6k --filter profile.yaml --output decisions.parquet   # re-decide a run
  dermgen filter calibrate labels.json --output profile.yaml   # labels from the report's Review section
exit status 0 whatever was kept.""",
    "inspect": """
  dermgen inspect outputs/derm-6k
  dermgen inspect s3://bucket/derm-6k --json""",
    "verify": """
  dermgen verify outputs/derm-6k
  dermgen verify s3://bucket/derm-6k --json""",
    "report": """
  dermgen report outputs/derm-6k --output report/""",
    "card": """
  dermgen card outputs/derm-6k --license cc-by-4.0""",
    "audit": """
  dermgen audit outputs/derm-6k --reference ./isic-train --output audit/
  dermgen audit ./Derm-T2IM-Dataset --reference ./isic --output audit/
  dermgen audit outputs/derm-6k --output audit/   # the training folder of the run's LoRA adapters""",
    "preprocess": """
  dermgen preprocess isic/ isic-512/ --resolution 512""",
    "train-lora": """
  dermgen train-lora --model tiny --data samples/ --output /tmp/lora --resolution 64 --max-steps 200
  dermgen train-lora --model derm-t2im --data isic-512/ --output adapters/isic --epochs 120
  dermgen train-lora --model derm-t2im --data isic-512/ --output adapters/isic --resume
  ray job submit --working-dir . -- python jobs/train_lora.py --data s3://bucket/isic-512 \\
      --output /shared/adapters/isic --num-workers 4
then: dermgen generate --lora adapters/isic/pytorch_lora_weights.safetensors:0.8 ...""",
    "merge-lora": """
  dermgen merge-lora --model derm-t2im --lora adapters/isic:0.8 --output merged.safetensors
  dermgen merge-lora --model sd15/ --lora a.safetensors:1 --output merged-folder/ --half""",
    "validate": """
  dermgen validate --real data/isic_train --synthetic s3://bucket/derm-6k --test data/isic_test \\
      --test data/ham10000 --model vit_b_16 --weights /models/vit-in21k --epochs 10 --output outputs/val
  dermgen validate --real REAL --synthetic RUN --test TEST --model mobilenet_v2 --model-size tiny \\
      --image-size 64 --epochs 5 --output /tmp/val          # CPU smoke run, random weights""",
}


# ------------------------------------------------------------------------------------------------ generate


def _filter_spec(text: str) -> str:
    """`--filter`: refused by argparse unless a preset or a *.yaml profile (the model checks the file)."""
    if text in ("default", "none") or text.lower().endswith((".yaml", ".yml")):
        return text
    raise argparse.ArgumentTypeError(f"expected default, none or a filter profile *.yaml file, got {text!r}")


def add_generate_args(p: argparse.ArgumentParser) -> None:
    """The options of `generate`: every GenerateConfig field, plus `--filter-override` and `--no-ray`."""
    add_model_options(
        p,
        GenerateConfig,
        exclude={"filter_overrides"},
        options={
            "lora": {"metavar": "PATH[:SCALE]"},
            "reference_dir": {"flags": ["--reference"]},
            "filter": {"metavar": "{default,none,PROFILE.yaml}", "type": _filter_spec},
        },
    )
    p.add_argument(
        "--filter-override",
        action="append",
        type=name_value,
        default=[],
        metavar="NAME=VALUE",
        help="override a filter threshold for the whole run, e.g. ink=0.1 or ruler=none (repeatable)",
    )
    p.add_argument(
        "--no-ray", dest="use_ray", action="store_false", help="run in this process without Ray (one worker)"
    )


def config_from_args(args: argparse.Namespace) -> GenerateConfig:
    """The GenerateConfig of parsed `generate` options (the model forbids unknown fields and has the defaults)."""
    return model_from_args(GenerateConfig, args, filter_overrides=dict(args.filter_override))


# Rough per-GPU rate for SD 1.5 at 512x512, 20 steps, CFG, fp16 on a current data-centre GPU.
EST_IMAGES_PER_GPU_S = 8.0


def dry_run(config) -> int:
    from dermgen.run import model_arg, validate

    manifest, plan, loras, _ = validate(config)
    lines = [
        f"manifest {manifest.name}: {len(manifest.entries)} entries, model {model_arg(config, manifest)}",
        f"{'entry':40s} {'label':10s} {'kept target':>11s} {'shards':>7s} {'size':>9s}  samplers / steps",
    ]
    shards_by_entry, targets = plan.shards_by_entry(), plan.targets
    step_sum = pixel_sum = 0.0  # target-weighted, for the GPU-hours estimate
    for e in manifest.entries:  # one write at the end: a manifest may hold hundreds of thousands of entries
        n = targets.get(e.id, 0)
        shards = shards_by_entry.get(e.id, 0)
        w, h = (plan.size, plan.size) if plan.size else e.width_height
        lo, hi = e.steps.min, e.steps.max
        steps = str(lo) if lo == hi else f"{lo}-{hi}"
        step_sum += (lo + hi) / 2 * n
        pixel_sum += (w * h / 512**2) * n
        lines.append(
            f"{e.id:40s} {e.label:10s} {n:>11,d} {shards:>7d} {w:>4d}x{h:<4d}  {', '.join(e.samplers)} / {steps}"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    by_label = plan.targets_by_label()
    total = plan.total_target
    print(
        f"total: {total:,d} planned kept images ("
        + ", ".join(f"{k} {v:,d}" for k, v in sorted(by_label.items()))
        + f") in {len(plan.shards)} shards"
    )
    mean_steps = step_sum / max(1, total)
    pixels = pixel_sum / max(1, total)
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


# ------------------------------------------------------------------------------------- other subcommands


def _options_of(model, body: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Validate the parsed options with `model`, then run `body` on the validated values."""

    def run(args: argparse.Namespace) -> int:
        options = model_from_args(model, args)
        return body(argparse.Namespace(**options.model_dump(by_alias=True)))

    return run


def cmd_train_lora(args: argparse.Namespace) -> int:
    from dermgen.train.lora_config import LoraTrainConfig

    return commands.cmd_train_lora(model_from_args(LoraTrainConfig, args), as_json=args.json)


def cmd_merge_lora(args: argparse.Namespace) -> int:
    from dermgen.train.merge import MergeLoraConfig

    return commands.cmd_merge_lora(model_from_args(MergeLoraConfig, args))


def cmd_validate(args: argparse.Namespace) -> int:
    from dermgen.train.classifier_config import ClassifierConfig

    return commands.cmd_validate(model_from_args(ClassifierConfig, args))


def build_parser() -> argparse.ArgumentParser:
    from dermgen.train.classifier_config import ClassifierConfig
    from dermgen.train.lora_config import LoraTrainConfig
    from dermgen.train.merge import MergeLoraConfig

    parser = argparse.ArgumentParser(
        prog="dermgen",
        description="Generate, filter, check and inspect synthetic skin-lesion datasets; fine-tune and validate.",
        epilog=EXIT_CODES_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dermgen {__version__}")
    add_verbose(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help,
            description=help[0].upper() + help[1:] + ".",
            epilog="examples:" + EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_verbose(p, top=False)
        p.set_defaults(func=func)
        return p

    add_generate_args(add("generate", "render a manifest into Parquet + PNG shards", cmd_generate))

    p = add(
        "filter",
        "score images and write keep/drop decisions with reasons",
        _options_of(commands.FilterOptions, commands.cmd_filter),
    )
    add_model_options(
        p,
        commands.FilterOptions,
        positional=["input"],
        options={
            "filter_override": {"type": name_value, "action": "append", "metavar": "NAME=VALUE"},
            "filter": {"metavar": "{default,PROFILE.yaml}", "type": _filter_spec},
        },
    )
    for name, help, model, body in (
        ("inspect", "summary of a run: rows, kept per label and entry, shards", commands.InspectOptions,
         commands.cmd_inspect),
        ("verify", "check a run's integrity; exit 5 on any problem", commands.VerifyOptions, commands.cmd_verify),
        ("report", "write a self-contained HTML report of a run", commands.ReportOptions, commands.cmd_report),
        ("card", "write or refresh README.md, the run's Hugging Face dataset card", commands.CardOptions,
         commands.cmd_card),
    ):  # fmt: skip
        add_model_options(add(name, help, _options_of(model, body)), model, positional=["uri"])
    p = add(
        "audit",
        "memorisation audit: nearest reference image of every generated image, with an HTML report",
        _options_of(commands.AuditOptions, commands.cmd_audit),
    )
    add_model_options(p, commands.AuditOptions, positional=["input"])
    p = add(
        "preprocess",
        "resize/crop and remove hair (DullRazor) for fine-tuning",
        _options_of(commands.PreprocessOptions, commands.cmd_preprocess),
    )
    add_model_options(p, commands.PreprocessOptions, positional=["input", "output"])

    p = add("train-lora", "DreamBooth + LoRA fine-tuning (defaults: the study's Table II)", cmd_train_lora)
    add_model_options(
        p,
        LoraTrainConfig,
        exclusive=[("max_steps", "epochs")],
        options={
            "learning_rate": {"flags": ["--learning-rate", "--lr"]},
            "adam_weight_decay": {"flags": ["--weight-decay", "--adam-weight-decay"]},
            "target_modules": {"type": csv_list, "metavar": "A,B,..."},
            "text_encoder_target_modules": {"type": csv_list, "metavar": "A,B,..."},
            "sample_prompts": {"type": lambda s: [t for t in s.split("|") if t], "metavar": "'P1|P2|...'"},
            "sample_seeds": {"type": int_list, "metavar": "0,1,..."},
        },
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(interrupt_hint="continue with --resume")

    p = add("merge-lora", "bake LoRA adapters into the base model (W = W0 + beta * dW)", cmd_merge_lora)
    add_model_options(p, MergeLoraConfig, options={"lora": {"metavar": "PATH[:SCALE]"}})

    p = add("validate", "baseline vs hybrid classifier validation (the study's Table IV)", cmd_validate)
    add_model_options(
        p, ClassifierConfig, options={"modes": {"nargs": "+", "type": str, "choices": ["baseline", "hybrid"]}}
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`dermgen ...`: returns the exit code (see EXIT_CODES in dermgen.errors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["filter", "calibrate"]:  # `dermgen filter calibrate LABELS.json --output profile.yaml`
        from dermgen.filters.calibrate import build_parser as calibrate_parser

        parser = calibrate_parser()
        add_verbose(parser, top=True)
        return run_command(parser, argv[2:])
    return run_command(build_parser(), argv)


__all__ = ["main", "build_parser", "add_generate_args", "config_from_args", "ConfigError"]
