"""Classifier models: transformers MobileNetV2 / ViT-B/16 from local weights, the hub or random init."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from dermgen.data.transforms import HALF_MEAN, HALF_STD
from dermgen.errors import ConfigError

log = logging.getLogger("dermgen.train.classifier")


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
