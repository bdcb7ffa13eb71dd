"""Validate a generated run the way the Derm-T2IM study did (Table IV): baseline vs hybrid classifiers.

    python jobs/validate_classifier.py --real data/isic_train --synthetic s3://bucket/derm-6k \\
        --test data/isic_test --test data/ham10000 --model vit_b_16 --weights /models/vit-in21k \\
        --epochs 10 --output outputs/validate-vit

    # CPU smoke run with random weights and the reduced model:
    python jobs/validate_classifier.py --real REAL --synthetic RUN --test TEST --model mobilenet_v2 \\
        --weights none --model-size tiny --image-size 64 --epochs 5 --output /tmp/val

Writes <output>/metrics.json (per mode and test set: accuracy, balanced accuracy, AUROC, sensitivity,
specificity, confusion matrix), <output>/table.md and <output>/curves.png. The logic lives in
dermgen.train.classifier; this file only parses arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from dermgen.errors import DermgenError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Baseline (real) vs hybrid (synthetic + real) classifier validation"
    )
    p.add_argument("--real", required=True, help="real training images, <dir>/<label>/*.png|jpg")
    p.add_argument(
        "--synthetic", help="generated run (local folder or s3://bucket/prefix); needed for hybrid"
    )
    p.add_argument(
        "--test", action="append", required=True, help="a real test folder (repeatable); keyed by its name"
    )
    p.add_argument("--model", required=True, choices=["mobilenet_v2", "vit_b_16"])
    p.add_argument(
        "--weights", required=True, help="none (random init), a transformers model folder, or a hub name"
    )
    p.add_argument(
        "--model-size", choices=["full", "tiny"], default=None, help="tiny: reduced model for CPU runs"
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument(
        "--lr", type=float, help="default: 2e-3/3e-4 (MobileNet/ViT, random init), 3e-4/5e-5 pretrained"
    )
    p.add_argument("--weight-decay", type=float)
    p.add_argument(
        "--synthetic-ratio", type=float, help="synthetic share of the hybrid training set (default 0.75)"
    )
    p.add_argument(
        "--val-fraction", type=float, help="share of --real held out for validation (default 0.15)"
    )
    p.add_argument(
        "--select", choices=["best", "last"], help="weights to evaluate: best validation epoch or last"
    )
    p.add_argument("--modes", nargs="+", choices=["baseline", "hybrid"])
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--num-workers", type=int, help="> 1: data-parallel training with Ray Train (TorchTrainer)"
    )
    p.add_argument("--loader-workers", type=int, help="DataLoader worker processes per trainer")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--no-amp", dest="amp", action="store_false", default=None, help="no bf16 autocast on GPU")
    p.add_argument(
        "--no-label-aliases",
        dest="label_aliases",
        action="store_false",
        default=None,
        help="folder names must be exactly benign/malignant (default also accepts nevus, melanoma, HAM10000 codes)",
    )
    p.add_argument(
        "--no-cache-images",
        dest="cache_images",
        action="store_false",
        default=None,
        help="decode images on every epoch instead of once (resized to --image-size) in memory",
    )
    p.add_argument("--cpu-threads", type=int, help="torch CPU threads (1 is fastest on a busy shared CPU)")
    p.add_argument(
        "--save-models",
        action="store_true",
        default=None,
        help="save each mode's model under <output>/models/",
    )
    p.add_argument("--output", required=True)
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from dermgen.train.classifier import make_classifier_config, render_table, run_validation

    options = {k: v for k, v in vars(args).items() if k != "verbose"}
    try:
        cfg = make_classifier_config(**options)
        metrics = run_validation(cfg)
    except DermgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(render_table(metrics))
    print(f"wrote {Path(cfg.output) / 'metrics.json'}, table.md, curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
