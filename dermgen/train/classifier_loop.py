"""Training and evaluation of one classifier in this process (also each Ray Train worker's loop)."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from dermgen.data.torch_dataset import ImageDataset
from dermgen.data.transforms import eval_transform, train_transform
from dermgen.train.classifier_config import ClassifierConfig
from dermgen.train.classifier_data import _loader
from dermgen.train.classifier_metrics import binary_metrics
from dermgen.train.classifier_models import _logits

log = logging.getLogger("dermgen.train.classifier")


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
