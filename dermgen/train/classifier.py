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
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch.utils.data import DataLoader

from dermgen.data.labels import LabelMap
from dermgen.data.mix import MixedDataset
from dermgen.data.real import FolderDataset
from dermgen.data.torch_dataset import DecodedCache, ImageDataset, RunDataset
from dermgen.data.transforms import HALF_MEAN, HALF_STD, eval_transform, train_transform
from dermgen.errors import ConfigError

log = logging.getLogger(__name__)

MODEL_NAMES = {"mobilenet_v2": "MobileNet-V2", "vit_b_16": "ViT-B/16"}
STUDY_VIT = "google/vit-base-patch16-224-in21k"
MODES = ("baseline", "hybrid")

# The study's Table IV (test accuracy, %), shown next to ours for reference.
STUDY_TABLE_IV = {
    ("mobilenet_v2", "baseline"): {"ISIC Archive": 78.89, "HAM10000": 70.33},
    ("vit_b_16", "baseline"): {"ISIC Archive": 90.74, "HAM10000": 81.50},
    ("mobilenet_v2", "hybrid"): {"ISIC Archive": 81.35, "HAM10000": 73.58},
    ("vit_b_16", "hybrid"): {"ISIC Archive": 93.03, "HAM10000": 85.02},
}


class ClassifierConfig(BaseModel):
    """Everything `jobs/validate_classifier.py` accepts."""

    model_config = ConfigDict(extra="forbid")

    real: str
    synthetic: str | None = None
    test: list[str] = Field(min_length=1)
    model: Literal["mobilenet_v2", "vit_b_16"]
    weights: str = "none"
    model_size: Literal["full", "tiny"] = "full"
    output: str
    epochs: int = Field(10, ge=1)
    image_size: int = Field(224, ge=32, le=1024)
    batch_size: int = Field(32, ge=1)
    lr: float | None = Field(None, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    synthetic_ratio: float = Field(0.75, ge=0.0, lt=1.0)
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    select: Literal["best", "last"] = "best"
    modes: list[Literal["baseline", "hybrid"]] = Field(default_factory=lambda: list(MODES))
    seed: int = Field(0, ge=0)
    num_workers: int = Field(1, ge=1)
    loader_workers: int = Field(0, ge=0)
    device: str | None = None
    amp: bool = True
    label_aliases: bool = True
    save_models: bool = False
    cache_images: bool = True
    cpu_threads: int | None = Field(None, ge=1)

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: int) -> int:
        if v % 8:
            raise ValueError("must be a multiple of 8")
        return v

    @model_validator(mode="after")
    def _hybrid_needs_run(self) -> ClassifierConfig:
        if "hybrid" in self.modes and not self.synthetic:
            raise ValueError("hybrid mode needs --synthetic RUN_URI (or --modes baseline)")
        if not self.modes:
            raise ValueError("modes: empty; expected baseline and/or hybrid")
        return self

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        pretrained = self.weights != "none"
        if self.model == "vit_b_16":
            return 5e-5 if pretrained else 3e-4
        return 3e-4 if pretrained else 2e-3

    def label_map(self) -> LabelMap:
        return LabelMap.with_aliases() if self.label_aliases else LabelMap()


def make_classifier_config(**kwargs: Any) -> ClassifierConfig:
    """Build a ClassifierConfig, turning validation errors into one readable ConfigError."""
    try:
        return ClassifierConfig(**{k: v for k, v in kwargs.items() if v is not None})
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            name = ".".join(str(p) for p in err["loc"]) or "config"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"--{name.replace('_', '-')}: {msg} (got {err.get('input')!r})")
        raise ConfigError("\n".join(lines)) from None


# -- models ------------------------------------------------------------------------------------------


def _looks_like_path(text: str) -> bool:
    """A filesystem path rather than a hub id ("org/name" or a legacy bare name)."""
    return text.startswith((".", "/", "~")) or text.count("/") > 1 or (os.sep != "/" and os.sep in text)


def build_model(
    name: str, weights: str = "none", *, size: str = "full", image_size: int = 224, num_labels: int = 2
) -> tuple[torch.nn.Module, tuple[float, ...], tuple[float, ...]]:
    """(model, normalisation mean, std) for `name` with `weights` "none", a local folder or a hub name."""
    from transformers import (
        MobileNetV2Config,
        MobileNetV2ForImageClassification,
        ViTConfig,
        ViTForImageClassification,
    )

    classes = {"mobilenet_v2": MobileNetV2ForImageClassification, "vit_b_16": ViTForImageClassification}
    if name not in classes:
        raise ConfigError(f"--model: {name!r} is not one of {list(classes)}")
    cls = classes[name]
    id2label = {0: "benign", 1: "malignant"} if num_labels == 2 else {i: str(i) for i in range(num_labels)}
    label2id = {v: k for k, v in id2label.items()}
    if weights == "none":
        if name == "mobilenet_v2":
            cfg = MobileNetV2Config(
                num_labels=num_labels,
                image_size=image_size,
                depth_multiplier=1.0 if size == "full" else 0.35,
                classifier_dropout_prob=0.2,
                id2label=id2label,
                label2id=label2id,
            )
        else:
            tiny = {
                "hidden_size": 96,
                "num_hidden_layers": 4,
                "num_attention_heads": 4,
                "intermediate_size": 192,
            }
            cfg = ViTConfig(
                image_size=image_size,
                patch_size=16 if size == "full" else 8,
                num_labels=num_labels,
                id2label=id2label,
                label2id=label2id,
                **({} if size == "full" else tiny),
            )
        return cls(cfg), HALF_MEAN, HALF_STD
    path = Path(weights).expanduser()
    local = path.is_dir()
    if not local and _looks_like_path(weights):
        raise ConfigError(
            f"--weights: {weights!r} is not a local model folder (expected none, PATH or a hub name)"
        )
    try:
        model = cls.from_pretrained(
            str(path) if local else weights,
            num_labels=num_labels,
            id2label=id2label,
            label2id=label2id,
            ignore_mismatched_sizes=True,
            local_files_only=local,
        )
    except OSError as exc:
        where = f"folder {weights!r}" if local else f"hub model {weights!r} (is the hub reachable?)"
        raise ConfigError(f"--weights: cannot load {where}: {str(exc).splitlines()[0]}") from None
    mean, std = HALF_MEAN, HALF_STD
    proc = path / "preprocessor_config.json" if local else None
    if proc is not None and proc.is_file():
        data = json.loads(proc.read_text())
        mean = tuple(data.get("image_mean", mean))
        std = tuple(data.get("image_std", std))
    return model, mean, std


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    core = getattr(model, "module", model)
    kwargs = {}
    cfg = getattr(core, "config", None)
    if cfg is not None and cfg.model_type == "vit" and x.shape[-1] != cfg.image_size:
        kwargs["interpolate_pos_encoding"] = True
    return model(pixel_values=x, **kwargs).logits


# -- metrics -----------------------------------------------------------------------------------------


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with tie correction); None if one class is absent."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y == 1].sum() - pos * (pos + 1) / 2.0
    return float(u / (pos * neg))


def binary_metrics(labels: Sequence[int], prob_positive: Sequence[float]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, AUROC, sensitivity (malignant recall), specificity, confusion matrix.

    The prediction is the argmax (p(malignant) >= 0.5). Confusion matrix rows are true classes
    [benign, malignant], columns predicted: [[TN, FP], [FN, TP]].
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(prob_positive, dtype=np.float64)
    pred = (p >= 0.5).astype(np.int64)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    n = len(y)
    sens = tp / (tp + fn) if tp + fn else None
    spec = tn / (tn + fp) if tn + fp else None
    recalls = [r for r in (sens, spec) if r is not None]
    return {
        "n": n,
        "accuracy": (tp + tn) / n if n else None,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
        "auroc": auroc(y, p),
        "sensitivity": sens,
        "specificity": spec,
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "confusion_labels": ["benign", "malignant"],
    }


# -- data --------------------------------------------------------------------------------------------


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) indices: `fraction` of each class held out (at least one when fraction > 0)."""
    rng = np.random.default_rng([seed, 2024])
    train, held = [], []
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        idx = [idx[int(j)] for j in rng.permutation(len(idx))]
        k = int(round(len(idx) * fraction))
        if fraction > 0 and k == 0 and len(idx) > 1:
            k = 1
        held.extend(idx[:k])
        train.extend(idx[k:])
    return sorted(train), sorted(held)


def prepare_data(cfg: ClassifierConfig) -> dict[str, Any]:
    """Real train/val split, the synthetic run, the test sets, and the per-mode training sets."""
    lm = cfg.label_map()

    def cached(ds: ImageDataset) -> ImageDataset:
        return DecodedCache(ds, cfg.image_size) if cfg.cache_images else ds

    real = cached(FolderDataset(cfg.real, label_map=lm))
    train_idx, val_idx = stratified_split(real.labels, cfg.val_fraction, cfg.seed)
    real_train, real_val = real.subset(train_idx), real.subset(val_idx)
    tests: dict[str, ImageDataset] = {}
    for path in cfg.test:
        name = Path(path).expanduser().resolve().name
        key, k = name, 2
        while key in tests:
            key, k = f"{name}-{k}", k + 1
        tests[key] = cached(FolderDataset(path, label_map=lm))
    train_sets: dict[str, ImageDataset] = {}
    composition: dict[str, Any] = {}
    if "baseline" in cfg.modes:
        train_sets["baseline"] = real_train
        composition["baseline"] = {"real": len(real_train), "synthetic": 0, "synthetic_fraction": 0.0}
    if "hybrid" in cfg.modes:
        syn = cached(RunDataset(cfg.synthetic, label_map=lm, cache_row_groups=None))
        n_real = len(real_train)
        wanted = int(round(n_real * cfg.synthetic_ratio / (1.0 - cfg.synthetic_ratio)))
        n_syn = min(wanted, len(syn))
        if n_syn < wanted:
            log.warning(
                "hybrid: run %s holds %d usable images, %d wanted for a %.0f%% synthetic mix; using all of them",
                cfg.synthetic,
                len(syn),
                wanted,
                100 * cfg.synthetic_ratio,
            )
        mixed = MixedDataset(
            {"synthetic": syn, "real": real_train}, {"synthetic": n_syn, "real": n_real}, seed=cfg.seed
        )
        train_sets["hybrid"] = mixed
        composition["hybrid"] = {
            "real": n_real,
            "synthetic": n_syn,
            "synthetic_wanted": wanted,
            "synthetic_available": len(syn),
            "synthetic_fraction": n_syn / max(1, n_real + n_syn),
            "labels": mixed.composition(),
        }
    return {
        "train": train_sets,
        "real_train": len(real_train),
        "val": real_val,
        "tests": tests,
        "composition": composition,
        "label_map": lm,
    }


def _loader(ds: ImageDataset, cfg: ClassifierConfig, *, shuffle: bool, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        generator=g,
        num_workers=cfg.loader_workers,
        drop_last=shuffle and len(ds) > cfg.batch_size,
    )


# -- training ----------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _device(cfg: ClassifierConfig) -> torch.device:
    if cfg.device:
        return torch.device(cfg.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, int(0.05 * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def predict(
    model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: bool = False
) -> tuple[list[int], list[float], float]:
    """(labels, p(malignant), mean cross-entropy) over a loader."""
    model.eval()
    labels: list[int] = []
    probs: list[float] = []
    loss_sum, n = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with torch.autocast(
            device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"
        ):
            logits = _logits(model, x).float()
        loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        n += len(y)
        probs.extend(torch.softmax(logits, dim=1)[:, 1].cpu().tolist())
        labels.extend(y.cpu().tolist())
    return labels, probs, loss_sum / max(1, n)


def train_one(
    cfg: ClassifierConfig,
    train_ds: ImageDataset,
    val_ds: ImageDataset | None,
    *,
    device: torch.device,
    mean: Sequence[float],
    std: Sequence[float],
    model: torch.nn.Module,
    sampler_hook=None,
    is_main: bool = True,
    report=None,
) -> tuple[torch.nn.Module, list[dict[str, Any]], int]:
    """Train `model` on `train_ds`; returns (model with the selected weights, history, selected epoch)."""
    train_loader = _loader(
        train_ds.with_format(transform=train_transform(cfg.image_size, mean, std)),
        cfg,
        shuffle=True,
        seed=cfg.seed,
    )
    if sampler_hook is not None:
        train_loader = sampler_hook(train_loader)
    val_loader = (
        _loader(
            val_ds.with_format(transform=eval_transform(cfg.image_size, mean, std)),
            cfg,
            shuffle=False,
            seed=cfg.seed,
        )
        if val_ds is not None and len(val_ds)
        else None
    )
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = _schedule(optimizer, cfg.epochs * max(1, len(train_loader)))
    history: list[dict[str, Any]] = []
    best_state, best_key, best_epoch = None, None, cfg.epochs
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        model.train()
        loss_sum, correct, n = 0.0, 0, 0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            with torch.autocast(
                device_type=device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"
            ):
                logits = _logits(model, x).float()
            loss = torch.nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": loss_sum / max(1, n),
            "train_accuracy": correct / max(1, n),
            "lr": scheduler.get_last_lr()[0],
            "seconds": time.perf_counter() - t0,
        }
        if val_loader is not None:
            labels, probs, vloss = predict(model, val_loader, device, cfg.amp)
            m = binary_metrics(labels, probs)
            row.update(
                val_loss=vloss, val_accuracy=m["accuracy"], val_balanced_accuracy=m["balanced_accuracy"]
            )
            key = (m["balanced_accuracy"] or 0.0, -vloss)
            if cfg.select == "best" and (best_key is None or key > best_key):
                best_key, best_epoch = key, epoch
                core = getattr(model, "module", model)
                best_state = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
        history.append(row)
        if is_main:
            log.info(
                "epoch %d/%d: loss %.4f acc %.3f%s (%.1fs)",
                epoch,
                cfg.epochs,
                row["train_loss"],
                row["train_accuracy"],
                f" | val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f}"
                if "val_loss" in row
                else "",
                row["seconds"],
            )
        if report is not None:
            report(row)
    if best_state is not None:
        getattr(model, "module", model).load_state_dict(best_state)
    else:
        best_epoch = cfg.epochs
    return model, history, best_epoch


def evaluate(
    cfg: ClassifierConfig,
    model: torch.nn.Module,
    datasets: dict[str, ImageDataset],
    device: torch.device,
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, dict[str, Any]]:
    out = {}
    for name, ds in datasets.items():
        loader = _loader(
            ds.with_format(transform=eval_transform(cfg.image_size, mean, std)),
            cfg,
            shuffle=False,
            seed=cfg.seed,
        )
        labels, probs, loss = predict(model, loader, device, cfg.amp)
        out[name] = {**binary_metrics(labels, probs), "loss": loss}
    return out


# -- Ray Train ---------------------------------------------------------------------------------------


def _ray_train_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: rebuild data and model, train with a DistributedSampler, rank 0 checkpoints."""
    import ray.train
    import ray.train.torch

    cfg = ClassifierConfig(**loop_config["cfg"])
    mode = loop_config["mode"]
    logging.basicConfig(level=logging.INFO)
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    _seed_everything(cfg.seed)
    data = prepare_data(cfg.model_copy(update={"modes": [mode]}))
    model, mean, std = build_model(cfg.model, cfg.weights, size=cfg.model_size, image_size=cfg.image_size)
    model = ray.train.torch.prepare_model(model)
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    history: list[dict[str, Any]] = []
    model, history, best_epoch = train_one(
        cfg,
        data["train"][mode],
        data["val"],
        device=device,
        mean=mean,
        std=std,
        model=model,
        sampler_hook=ray.train.torch.prepare_data_loader,
        is_main=rank == 0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            core = getattr(model, "module", model)
            torch.save({k: v.cpu() for k, v in core.state_dict().items()}, os.path.join(tmp, "model.pt"))
            Path(tmp, "history.json").write_text(json.dumps({"history": history, "best_epoch": best_epoch}))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({"epochs": len(history)}, checkpoint=checkpoint)


def train_with_ray(
    cfg: ClassifierConfig, mode: str
) -> tuple[torch.nn.Module, list[dict[str, Any]], int, tuple[float, ...], tuple[float, ...]]:
    """Train one mode with TorchTrainer on `cfg.num_workers` workers.

    Returns the rank-0 model (selected weights), its history, the selected epoch and the normalisation.
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started = False
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False)
        started = True
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        use_gpu = gpus >= cfg.num_workers and (cfg.device is None or cfg.device.startswith("cuda"))
        if 0 < gpus < cfg.num_workers:
            log.warning(
                "--num-workers %d but the cluster has %d GPU(s): training on CPUs", cfg.num_workers, gpus
            )
        trainer = TorchTrainer(
            _ray_train_loop,
            train_loop_config={"cfg": cfg.model_dump(), "mode": mode},
            scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu),
            run_config=RunConfig(
                name=f"{cfg.model}-{mode}", storage_path=str(Path(cfg.output).resolve() / "ray_results")
            ),
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"Ray Train run for {mode} reported no checkpoint")
        with result.checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, "model.pt"), map_location="cpu")
            meta = json.loads(Path(d, "history.json").read_text())
    finally:
        if started:
            ray.shutdown()
    model, mean, std = build_model(cfg.model, cfg.weights, size=cfg.model_size, image_size=cfg.image_size)
    model.load_state_dict(state)
    return model, meta["history"], meta["best_epoch"], mean, std


def ray_available() -> bool:
    try:
        import ray.train.torch  # noqa: F401
    except ImportError:
        return False
    return True


# -- reports -----------------------------------------------------------------------------------------


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def render_table(metrics: dict[str, Any]) -> str:
    """Markdown: test accuracy per mode and test set (Table IV layout), then the other metrics."""
    model = metrics["config"]["model"]
    label = MODEL_NAMES[model] + (" (tiny)" if metrics["config"]["model_size"] == "tiny" else "")
    modes = [m for m in MODES if m in metrics]
    tests = list(metrics[modes[0]].keys()) if modes else []
    lines = [
        f"# Classifier validation: {label}, weights `{metrics['config']['weights']}`",
        "",
        "Test accuracy (%) on unseen real data, as in the study's Table IV:",
        "",
        "| model | " + " | ".join(tests) + " | validation |",
        "| --- | " + " | ".join("---" for _ in tests) + " | --- |",
    ]
    for mode in modes:
        val = metrics["validation"].get(mode, {}).get("accuracy")
        cells = [_pct(metrics[mode][t]["accuracy"]) for t in tests]
        lines.append(f"| {label}, {mode} | " + " | ".join(cells) + f" | {_pct(val)} |")
    lines += ["", "All metrics (%; AUROC x100):", ""]
    lines.append(
        "| model | test set | n | accuracy | balanced acc. | AUROC | sensitivity | specificity | confusion [[TN, FP], [FN, TP]] |"
    )
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for mode in modes:
        for t in tests:
            m = metrics[mode][t]
            lines.append(
                f"| {label}, {mode} | {t} | {m['n']} | {_pct(m['accuracy'])} | {_pct(m['balanced_accuracy'])} | "
                f"{_pct(m['auroc'])} | {_pct(m['sensitivity'])} | {_pct(m['specificity'])} | {m['confusion_matrix']} |"
            )
    lines += ["", "Training sets:", ""]
    for mode in modes:
        c = metrics["training"][mode]["composition"]
        lines.append(
            f"- {mode}: {c['real']} real + {c['synthetic']} synthetic "
            f"({100 * c['synthetic_fraction']:.1f}% synthetic), {metrics['training'][mode]['epochs']} epochs, "
            f"selected epoch {metrics['training'][mode]['selected_epoch']}"
        )
    study = [(m, STUDY_TABLE_IV.get((model, m))) for m in modes]
    if any(s for _, s in study):
        lines += [
            "",
            "The study's Table IV for reference (ISIC Archive / HAM10000 test sets, full models, pretrained):",
            "",
        ]
        for mode, s in study:
            if s:
                lines.append(
                    f"- {MODEL_NAMES[model]}, {mode}: " + ", ".join(f"{k} {v:.2f}" for k, v in s.items())
                )
    return "\n".join(lines) + "\n"


def plot_curves(metrics: dict[str, Any], path: Path) -> None:
    """Training loss and validation accuracy per epoch, one line per mode (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for k, (mode, info) in enumerate(metrics["training"].items()):
        hist = info["history"]
        color = f"C{k}"
        epochs = [h["epoch"] for h in hist]
        axes[0].plot(epochs, [h["train_loss"] for h in hist], color=color, label=f"{mode} train")
        axes[1].plot(epochs, [h["train_accuracy"] for h in hist], color=color, label=f"{mode} train")
        if hist and "val_loss" in hist[0]:
            axes[0].plot(epochs, [h["val_loss"] for h in hist], "--", color=color, label=f"{mode} val")
            axes[1].plot(epochs, [h["val_accuracy"] for h in hist], "--", color=color, label=f"{mode} val")
    axes[0].set_yscale("log")
    axes[0].set(title="loss", xlabel="epoch")
    axes[1].set(title="accuracy", xlabel="epoch", ylim=(0, 1))
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{MODEL_NAMES[metrics['config']['model']]} ({metrics['config']['model_size']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
