"""Classifier validation of generated data, as in the Derm-T2IM study's Table IV.

Two training sets per model, evaluated on the same unseen real test sets:

- ``baseline``: real images only (the training split of ``--real``);
- ``hybrid``: the same real images plus synthetic ones from a run so that synthetic images make up
  ``synthetic_ratio`` of the set (0.75 in the study). If the run holds fewer, all of it is used and the
  achieved ratio is recorded.

Models are transformers' ``MobileNetV2ForImageClassification`` and ``ViTForImageClassification``
(ViT-B/16, the study's ``google/vit-base-patch16-224-in21k`` architecture), from a local weights folder,
a hub name when the hub is reachable, or random weights (``weights="none"``, offline runs).
``model_size="tiny"`` gives narrow versions for CPU smoke runs (MobileNetV2 with depth multiplier 0.35;
a 4-layer, 96-wide ViT with 8 px patches) and is not the study's setup.

Outputs under ``output``: ``metrics.json`` (per mode and test set: accuracy, balanced accuracy, AUROC,
sensitivity, specificity, confusion matrix), ``table.md`` (Table IV layout), ``curves.png``.
With ``num_workers > 1`` and Ray installed, each mode trains data-parallel with Ray Train's
TorchTrainer (one process per worker, GPUs when the cluster has them); otherwise in this process.

Modules: `classifier_config` (options), `classifier_data` (splits, mixing, loaders), `classifier_models`,
`classifier_loop` (training, evaluation), `classifier_ray` (Ray Train), `classifier_metrics` (metrics,
table, curves); this module runs the job.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from dermgen.train.classifier_config import STUDY_TABLE_IV, ClassifierConfig, make_classifier_config
from dermgen.train.classifier_data import prepare_data, stratified_split
from dermgen.train.classifier_loop import _device, _seed_everything, evaluate, train_one
from dermgen.train.classifier_metrics import auroc, binary_metrics, plot_curves, render_table
from dermgen.train.classifier_models import _logits, build_model  # noqa: F401 - _logits: tests
from dermgen.train.classifier_ray import ray_available, train_with_ray

log = logging.getLogger("dermgen.train.classifier")

# -- the job -----------------------------------------------------------------------------------------


def run_validation(cfg: ClassifierConfig) -> dict[str, Any]:
    """Train every mode, evaluate on the validation split and every test set, write the reports."""
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    data = prepare_data(cfg)
    use_ray = cfg.num_workers > 1 and ray_available()
    if cfg.num_workers > 1 and not use_ray:
        log.warning("--num-workers %d: Ray Train is not installed; training in this process", cfg.num_workers)
    device = _device(cfg)
    metrics: dict[str, Any] = {
        "config": cfg.model_dump(),
        "learning_rate": cfg.learning_rate,
        "data": {
            "real_train": data["real_train"],
            "real_val": len(data["val"]),
            "tests": {k: len(v) for k, v in data["tests"].items()},
        },
        "validation": {},
        "training": {},
        "study_table_iv": {f"{m}/{mode}": v for (m, mode), v in STUDY_TABLE_IV.items() if m == cfg.model},
    }
    for mode in cfg.modes:
        t0 = time.perf_counter()
        log.info(
            "training %s (%s, %s weights) on %d images",
            mode,
            cfg.model,
            cfg.weights,
            len(data["train"][mode]),
        )
        if use_ray:
            model, history, best_epoch, mean, std = train_with_ray(cfg, mode)
        else:
            _seed_everything(cfg.seed)  # the same initial weights and batch order seed for every mode
            model, mean, std = build_model(
                cfg.model, cfg.weights, size=cfg.model_size, image_size=cfg.image_size
            )
            model, history, best_epoch = train_one(
                cfg, data["train"][mode], data["val"], device=device, mean=mean, std=std, model=model
            )
        model.to(device)
        metrics[mode] = evaluate(cfg, model, data["tests"], device, mean, std)
        if len(data["val"]):
            metrics["validation"][mode] = evaluate(cfg, model, {"val": data["val"]}, device, mean, std)["val"]
        metrics["training"][mode] = {
            "composition": data["composition"][mode],
            "epochs": len(history),
            "selected_epoch": best_epoch,
            "history": history,
            "seconds": time.perf_counter() - t0,
            "ray_workers": cfg.num_workers if use_ray else 1,
        }
        if cfg.save_models:
            model.save_pretrained(out / "models" / mode)
        log.info(
            "%s: %s",
            mode,
            ", ".join(f"{t} acc {100 * m['accuracy']:.2f}%" for t, m in metrics[mode].items()),
        )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=False, default=str))
    (out / "table.md").write_text(render_table(metrics))
    plot_curves(metrics, out / "curves.png")
    return metrics


__all__ = [
    "ClassifierConfig",
    "auroc",
    "binary_metrics",
    "build_model",
    "make_classifier_config",
    "prepare_data",
    "render_table",
    "run_validation",
    "stratified_split",
]
