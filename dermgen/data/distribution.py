"""Distribution distance between a run and a reference image folder: Fréchet distance and KID.

FID proper is the Fréchet distance of Inception-v3 pool features. No Inception weights ship with this
project and none may be downloaded, so the features come from a model you have locally: any transformers
image model folder (ViT, DINOv2, MobileNetV2, ...) passed by path; the report then says which features
were used ("Fréchet distance on <model> features"), and the numbers are comparable only with numbers
computed on the same features. Without a local model the check is skipped with a message, unless the
deterministic fallback is asked for explicitly: ``features="color-histogram"`` (RGB colour histograms,
NOT Inception: a coarse colour-distribution check, never to be reported as FID).

    python -m dermgen.data.distribution RUN_URI REFERENCE_DIR --features /models/dinov2-small
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from dermgen.errors import ConfigError, DermgenError

log = logging.getLogger(__name__)

HISTOGRAM_FEATURES = "color-histogram"


class FeatureExtractor(Protocol):
    """Images -> one feature vector each."""

    name: str
    description: str

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray: ...


class ColorHistogramFeatures:
    """Joint RGB histogram (bins^3 cells, L1-normalised, square-rooted): deterministic and weight-free.

    Colour-histogram features, NOT Inception: distances on them say whether colour distributions differ,
    not whether images look alike, and are not comparable to any published FID.
    """

    name = HISTOGRAM_FEATURES
    description = "color-histogram features (joint RGB, not Inception; not FID)"

    def __init__(self, bins: int = 6, size: int = 128) -> None:
        self.bins = bins
        self.size = size

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = []
        for img in images:
            arr = np.asarray(img.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR))
            q = (arr.astype(np.int32) * self.bins) // 256
            idx = (q[..., 0] * self.bins + q[..., 1]) * self.bins + q[..., 2]
            hist = np.bincount(idx.ravel(), minlength=self.bins**3).astype(np.float64)
            out.append(np.sqrt(hist / hist.sum()))
        return np.stack(out)


class TransformersFeatures:
    """Pooled features of a local transformers image model (folder with config + weights + processor)."""

    def __init__(self, path: str | os.PathLike, device: str | None = None, batch_size: int = 16) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModel

        p = Path(path)
        if not (p / "config.json").is_file():
            raise ConfigError(
                f"--features: {str(path)!r} is not a transformers model folder (no config.json)"
            )
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModel.from_pretrained(str(p), local_files_only=True).to(self.device).eval()
        self.processor = AutoImageProcessor.from_pretrained(str(p), local_files_only=True)
        self.batch_size = batch_size
        self.name = f"{self.model.config.model_type}:{p.name}"
        self.description = f"pooled {self.model.config.model_type} features from {p} (not Inception)"

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        feats = []
        for i in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[i : i + self.batch_size]]
            inputs = self.processor(images=batch, return_tensors="pt").to(self.device)
            with torch.no_grad():
                out = self.model(**inputs)
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                hidden = out.last_hidden_state
                pooled = hidden.mean(dim=1) if hidden.dim() == 3 else hidden.mean(dim=(2, 3))
            feats.append(pooled.reshape(pooled.shape[0], -1).float().cpu().numpy())
        return np.concatenate(feats).astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) of two feature sets (rows = samples)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("need at least 2 samples per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((S_a S_b)^1/2) = sum of square roots of the eigenvalues of S_a S_b (real, >= 0 for PSD S_a, S_b)
    eig = np.linalg.eigvals(np.atleast_2d(s_a) @ np.atleast_2d(s_b))
    tr_sqrt = float(np.sqrt(np.clip(eig.real, 0, None)).sum())
    value = float(
        ((mu_a - mu_b) ** 2).sum() + np.trace(np.atleast_2d(s_a)) + np.trace(np.atleast_2d(s_b)) - 2 * tr_sqrt
    )
    return max(value, 0.0)


def kernel_inception_distance(
    a: np.ndarray, b: np.ndarray, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y/d + 1)^3, averaged over random subsets."""
    d = a.shape[1]
    m = min(len(a), len(b), subset_size)
    if m < 2:
        raise ValueError("need at least 2 samples per set")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = (
            (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
            + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean()
        )
        vals.append(mmd)
    return float(np.mean(vals)), float(np.std(vals))


def _images_of(dataset, max_images: int | None, seed: int) -> list[Image.Image]:
    from dermgen.data.torch_dataset import decode_image

    n = len(dataset)
    idx = list(range(n))
    if max_images is not None and n > max_images:
        idx = sorted(int(i) for i in np.random.default_rng(seed).choice(n, max_images, replace=False))
    return [decode_image(dataset.image_bytes(i)) for i in idx]


def make_extractor(features: str | os.PathLike | FeatureExtractor | None) -> FeatureExtractor | None:
    """A feature extractor for a model folder path, "color-histogram", an extractor, or None (skip)."""
    if features is None:
        return None
    if not isinstance(features, str | os.PathLike):
        return features
    if str(features) == HISTOGRAM_FEATURES:
        return ColorHistogramFeatures()
    if not Path(features).is_dir():
        raise ConfigError(
            f"--features: {str(features)!r} is neither a local transformers model folder nor "
            f"{HISTOGRAM_FEATURES!r}; nothing is downloaded"
        )
    return TransformersFeatures(features)


def distribution_report(
    run: Any,
    reference: str | os.PathLike,
    *,
    features: str | os.PathLike | FeatureExtractor | None = None,
    max_images: int | None = 2000,
    seed: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
) -> dict[str, Any]:
    """Fréchet distance and KID between a run's kept images (or any ImageDataset) and a reference folder.

    Returns ``{"skipped": True, "reason": ...}`` when no feature extractor is given.
    """
    from dermgen.data.real import FolderDataset
    from dermgen.data.torch_dataset import ImageDataset, RunDataset

    extractor = make_extractor(features)
    if extractor is None:
        reason = (
            "no local feature extractor: pass features=<transformers image model folder> (e.g. a DINOv2 "
            f"or ViT checkpoint) or features={HISTOGRAM_FEATURES!r} for the labelled colour-histogram "
            "fallback; no Inception weights are available offline, so true FID is not computed"
        )
        log.warning("distribution check skipped: %s", reason)
        return {"skipped": True, "reason": reason}
    data = run if isinstance(run, ImageDataset) else RunDataset(run)
    ref = FolderDataset(reference, label_map=data.label_map)
    a = extractor(_images_of(data, max_images, seed))
    b = extractor(_images_of(ref, max_images, seed + 1))
    kid, kid_std = kernel_inception_distance(
        a, b, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed
    )
    fd = frechet_distance(a, b)
    return {
        "skipped": False,
        "features": extractor.name,
        "features_description": extractor.description,
        "is_fid": False,  # only Inception-v3 pool features make it FID
        "frechet_distance": fd,
        "kid": kid,
        "kid_std": kid_std,
        "n_run": int(len(a)),
        "n_reference": int(len(b)),
        "feature_dim": int(a.shape[1]),
        "note": (
            f"Fréchet distance / KID on {extractor.description}; comparable only with values computed on "
            "the same features"
        ),
    }


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run URI (local folder or s3://bucket/prefix)")
    parser.add_argument("reference", help="reference folder laid out <root>/<label>/*.png|jpg")
    parser.add_argument("--features", help=f"transformers image model folder, or {HISTOGRAM_FEATURES!r}")
    parser.add_argument("--max-images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = distribution_report(
            args.run, args.reference, features=args.features, max_images=args.max_images, seed=args.seed
        )
    except DermgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
