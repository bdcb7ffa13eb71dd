"""Training, validation and test sets of the classifier job: stratified splits, synthetic mixing, loaders."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from dermgen.data.mix import MixedDataset
from dermgen.data.real import FolderDataset
from dermgen.data.torch_dataset import DecodedCache, ImageDataset, RunDataset
from dermgen.train.classifier_config import ClassifierConfig

log = logging.getLogger("dermgen.train.classifier")


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
