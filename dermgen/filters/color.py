"""Colour and exposure scorers: marker ink, colour tint, contrast, clipped exposure."""

from __future__ import annotations

import cv2
import numpy as np

from dermgen.filters.base import WORK_SIDE, ImageView, Scorer

__all__ = ["ClippedScorer", "ContrastScorer", "InkScorer", "TintScorer"]

_INK_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (17, 17))
INK_TOPHAT = 20.0  # how much bluer than its 17 px neighbourhood a pixel must be (Lab units)
INK_MIN_BLUE = 25.0  # and how blue in absolute terms: b* < -25
INK_MIN_COMPONENT = 40  # connected strokes only (px at 256 px): lone specks of blue texture do not count


class InkScorer(Scorer):
    """Fraction of the frame (0..1) covered by surgical-marker ink strokes.

    A pixel is ink when it is strongly blue/violet (Lab b* < -25) and much bluer than its
    neighbourhood (white top-hat of a blueness channel, 17 px at 256 px, > 20), and it belongs to a
    connected stroke of at least 40 px (at 256 px). Diffuse blue-grey lesions and lavender skin are
    not thin, locally bluer structures, so they score ~0; a couple of small ink dots score < 0.005;
    thick marker circles around a lesion score 0.04..0.15.
    """

    names = ("ink",)

    def compute(self, view: ImageView) -> dict[str, float]:
        lab = view.work_lab
        a, b = lab[..., 1], lab[..., 2]
        if not (b < -INK_MIN_BLUE).any():
            return {"ink": 0.0}
        blue = np.clip(-b + 0.3 * np.clip(a, 0, None), 0, 255).astype(np.uint8)
        tophat = cv2.morphologyEx(blue, cv2.MORPH_TOPHAT, _INK_KERNEL)
        mask = ((tophat > INK_TOPHAT) & (b < -INK_MIN_BLUE)).astype(np.uint8)
        if not mask.any():
            return {"ink": 0.0}
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]
        scale = (max(mask.shape) / WORK_SIDE) ** 2
        return {"ink": float(areas[areas >= INK_MIN_COMPONENT * scale].sum() / mask.size)}


# Mean and covariance of the per-image median (a*, b*) of the calibration split of the kept samples
# (benchmarks/filter_calibration.py prints them; 60 images, Lab a*/b* with 128 subtracted).
TINT_MEAN = np.array([18.117, 4.267], dtype=np.float64)
TINT_COV = np.array([[130.71, 64.09], [64.09, 191.96]], dtype=np.float64)
TINT_SCALE = 10.0  # tint = Mahalanobis distance / 10, capped at 1


class TintScorer(Scorer):
    """Colour-cast strength, 0..1: Mahalanobis distance / 10 of the image's median (a*, b*).

    The distance is measured against the distribution of median colours of kept samples (pink,
    red, beige, lavender skin; :data:`TINT_MEAN`, :data:`TINT_COV`). Kept samples score <= 0.3;
    green, blue, cyan, yellow or hot-magenta casts score 0.3..1.
    """

    names = ("tint",)

    def __init__(self, mean: np.ndarray = TINT_MEAN, cov: np.ndarray = TINT_COV) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.inv_cov = np.linalg.inv(np.asarray(cov, dtype=np.float64))

    def median_ab(self, view: ImageView) -> np.ndarray:
        lab = view.small_lab
        return np.array([np.median(lab[..., 1]), np.median(lab[..., 2])], dtype=np.float64)

    def compute(self, view: ImageView) -> dict[str, float]:
        d = self.median_ab(view) - self.mean
        dist = float(np.sqrt(d @ self.inv_cov @ d))
        return {"tint": min(1.0, dist / TINT_SCALE)}


class ContrastScorer(Scorer):
    """Luminance contrast, 0..1: 99th minus 1st percentile of Lab L (scaled to 0..1).

    Kept samples score 0.35..0.95 (even a tiny mole on plain skin spans > 0.35); a washed-out
    haze or a crushed under-exposure scores < 0.3; a blank frame ~0.
    """

    names = ("contrast",)

    def compute(self, view: ImageView) -> dict[str, float]:
        lum = view.small_lab[..., 0]
        lo, hi = np.percentile(lum, (1, 99))
        return {"contrast": float((hi - lo) / 255.0)}


CLIP_HIGH = 245  # grey level at or above which a pixel is a clipped highlight
CLIP_LOW = 10  # grey level at or below which a pixel is a crushed shadow


class ClippedScorer(Scorer):
    """Fraction of pixels (0..1) in clipped highlights (grey >= 245) or crushed shadows (grey <= 10).

    Kept samples score < 0.15 (specular spots, black vignette corners); over-exposure scores
    0.2..1, strong under-exposure 0.05..1 (what it leaves unclipped fails the contrast bound).
    """

    names = ("clipped",)

    def compute(self, view: ImageView) -> dict[str, float]:
        g = view.small_gray
        return {"clipped": float(((g >= CLIP_HIGH) | (g <= CLIP_LOW)).mean())}
