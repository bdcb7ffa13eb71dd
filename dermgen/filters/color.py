"""Colour and exposure scorers: marker ink, colour tint, contrast, clipped exposure."""

from __future__ import annotations

import cv2
import numpy as np

from dermgen.filters.base import ANALYSIS_SIDE, ImageView, Scorer

__all__ = ["ClippedScorer", "ContrastScorer", "InkScorer", "TintScorer", "ink_mask"]

INK_MIN_CHROMA = 34.0  # Lab chroma sqrt(a*^2 + b*^2): marker ink is saturated (kept skin and veils < 34)
INK_HUE = (-100.0, -20.0)  # Lab hue angle in degrees: blue (-100) through violet to purple (-20)
INK_MIN_CONTRAST = 25.0  # b* at least this far below the frame's median b*: bluer than the skin around
INK_MIN_COMPONENT = 6  # px at 128 px: lone specks of blue texture do not count


def ink_mask(view: ImageView) -> np.ndarray:
    """Boolean mask (at analysis size) of marker-ink pixels; cached on the view.

    A pixel is ink when its colour is a saturated blue, violet or purple (Lab chroma >= 34, hue between
    -100 and -20 degrees), it is much bluer than the frame as a whole (b* at least 25 below the median
    b*, so a lavender-lit frame is not ink), and it lies in a connected patch of at least 6 px at
    128 px. Colour alone, no stroke width: broad marker bands, circles, hatching and dots all count.
    """
    if "ink_mask" in view.cache:
        return view.cache["ink_mask"]
    lab = view.analysis_lab
    a, b = lab[..., 1], lab[..., 2]
    chroma = cv2.magnitude(a, b)
    hue = np.degrees(np.arctan2(b, a))
    mask = (
        (chroma >= INK_MIN_CHROMA)
        & (hue >= INK_HUE[0])
        & (hue <= INK_HUE[1])
        & (b < float(np.median(b)) - INK_MIN_CONTRAST)
    )
    if mask.any():
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        scale = (max(mask.shape) / ANALYSIS_SIDE) ** 2
        big = stats[:, cv2.CC_STAT_AREA] >= INK_MIN_COMPONENT * scale
        big[0] = False
        mask = big[labels]
    view.cache["ink_mask"] = mask
    return mask


class InkScorer(Scorer):
    """Fraction of the frame (0..1) covered by surgical-marker ink (see :func:`ink_mask`).

    Measured at the analysis size (128 px), so the same frame scores the same at any resolution.
    Kept samples, including blue-grey veils and lavender-lit frames, score <= 0.01, a kept frame with a
    few marker specks 0.022 (a couple of small ink dots add < 0.002); the study's discarded frames with
    broad violet strokes, circles or hatching around the lesion score 0.08..0.25.
    """

    names = ("ink",)

    def compute(self, view: ImageView) -> dict[str, float]:
        return {"ink": float(ink_mask(view).mean())}


# Mean and covariance of the per-image median (a*, b*) of the calibration split of the kept samples
# (benchmarks/filter_calibration.py prints them; 60 images, Lab a*/b* with 128 subtracted).
TINT_MEAN = np.array([18.117, 4.267], dtype=np.float64)
TINT_COV = np.array([[130.71, 64.09], [64.09, 191.96]], dtype=np.float64)
TINT_SCALE = 10.0  # tint = Mahalanobis distance / 10, capped at 1
COOL_MIN_CHROMA = 15.0  # a blue/cyan pixel: Lab chroma above this ...
COOL_HUE = (-150.0, -60.0)  # ... and hue between cyan (-150 degrees) and blue (-60)
COOL_SCALE = 0.6  # cool part = fraction of blue/cyan pixels / 0.6 (kept <= 0.135 -> 0.23; 0.16 -> 0.26)


class TintScorer(Scorer):
    """Colour-cast strength, 0..1: the larger of two parts, each 0..1.

    - the Mahalanobis distance / 10 of the image's median (a*, b*), against the distribution of
      median colours of kept samples (pink, red, beige, lavender skin; :data:`TINT_MEAN`,
      :data:`TINT_COV`): green, blue, cyan, yellow or hot-magenta casts over the whole frame;
    - the fraction of blue/cyan pixels (chroma > 15, hue -150..-60 degrees) / 0.6: a blue or cyan
      cast over the lesion and part of the frame, which leaves the median colour alone.

    Kept samples score <= 0.24 (blue-grey veils included); extreme casts 0.26..1.
    """

    names = ("tint",)

    def __init__(self, mean: np.ndarray = TINT_MEAN, cov: np.ndarray = TINT_COV) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.inv_cov = np.linalg.inv(np.asarray(cov, dtype=np.float64))

    def median_ab(self, view: ImageView) -> np.ndarray:
        lab = view.analysis_lab
        return np.array([np.median(lab[..., 1]), np.median(lab[..., 2])], dtype=np.float64)

    def compute(self, view: ImageView) -> dict[str, float]:
        d = self.median_ab(view) - self.mean
        dist = float(np.sqrt(d @ self.inv_cov @ d))
        lab = view.analysis_lab
        a, b = lab[..., 1], lab[..., 2]
        hue = np.degrees(np.arctan2(b, a))
        cool = (cv2.magnitude(a, b) > COOL_MIN_CHROMA) & (hue >= COOL_HUE[0]) & (hue <= COOL_HUE[1])
        return {"tint": min(1.0, max(dist / TINT_SCALE, float(cool.mean()) / COOL_SCALE))}


class ContrastScorer(Scorer):
    """Luminance contrast, 0..1: 99th minus 1st percentile of Lab L (scaled to 0..1).

    Kept samples score 0.35..0.95 (even a tiny mole on plain skin spans > 0.35); a washed-out
    haze or a crushed under-exposure scores < 0.3; a blank frame ~0.
    """

    names = ("contrast",)

    def compute(self, view: ImageView) -> dict[str, float]:
        lum = view.analysis_lab[..., 0]
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
        g = view.analysis_gray
        return {"clipped": float(((g >= CLIP_HIGH) | (g <= CLIP_LOW)).mean())}
