"""Skin tone: the Individual Typology Angle (ITA) of the skin around the lesion, and its six groups.

ITA = atan((L* - 50) / b*) in degrees, from CIELAB (D65 white, sRGB input) of the skin pixels only:
the lesion mask of :func:`dermgen.filters.lesion.segment_lesion` is dilated (so its dark rim and halo
do not count), clipped shadows and highlights (vignette corners, specular spots) are left out, and
L* and b* are the 20%-trimmed means of what remains (robust to hair, ink dots, small second moles).
The groups follow the literature (Chardon et al. 1991; Del Bino and Bernerd 2013), in degrees:

    very_light > 55 >= light > 41 >= intermediate > 28 >= tan > 10 >= brown > -30 >= dark

A value exactly on a boundary belongs to the darker group (ITA 55 is ``light``). The group names and
bounds live in :mod:`dermgen.skintone` (re-exported here).
"""

from __future__ import annotations

import cv2
import numpy as np

from dermgen.filters.base import ImageView, Scorer
from dermgen.filters.lesion import segment_lesion
from dermgen.skintone import (
    SKIN_TONE_BOUNDS,
    SKIN_TONE_REASON,
    SKIN_TONES,
    ita_degrees,
    skin_tone_of,
    skin_tone_reasons,
)

__all__ = [
    "SKIN_TONES",
    "SKIN_TONE_REASON",
    "SKIN_TONE_BOUNDS",
    "SkinToneScorer",
    "skin_tone_reasons",
    "ita_degrees",
    "lab_to_srgb",
    "skin_tone_of",
    "srgb_to_lab",
]

DILATE_FRACTION = 0.06  # the lesion mask grows by this fraction of the shorter side (both ways)
TRIM = 0.2  # fraction cut from each end before averaging L* and b*
MIN_SKIN_FRACTION = 0.05  # fewer skin pixels than this (of the frame): fall back to all unclipped pixels
CLIP_LOW, CLIP_HIGH = 10, 245  # grey levels of crushed shadows / clipped highlights (as ClippedScorer)

_D65 = np.array([0.95047, 1.0, 1.08883])
_RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_EPS, _KAPPA = 216 / 24389, 24389 / 27


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (L* 0..100, a*, b* signed; D65) of sRGB values, uint8 0..255 or float 0..1, shape (..., 3)."""
    x = np.asarray(rgb, dtype=np.float64)
    if np.asarray(rgb).dtype == np.uint8:
        x = x / 255.0
    lin = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _RGB_TO_XYZ.T / _D65
    f = np.where(xyz > _EPS, np.cbrt(xyz), (_KAPPA * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """sRGB uint8 (rounded, clipped) of CIELAB values (D65), shape (..., 3): the inverse of srgb_to_lab."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = np.where(f**3 > _EPS, f**3, (116 * f - 16) / _KAPPA) * _D65
    lin = np.clip(xyz @ _XYZ_TO_RGB.T, 0, 1)
    x = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def _trimmed_mean(values: np.ndarray, trim: float = TRIM) -> float:
    v = values.ravel()
    k = int(len(v) * trim)
    if len(v) - 2 * k <= 0:
        return float(v.mean())
    part = np.partition(v, (k, len(v) - k - 1))
    return float(part[k : len(v) - k].mean())


def fast_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB of sRGB uint8 via OpenCV's float path (same D65 sRGB formulas, float32; within 0.25 of
    :func:`srgb_to_lab`), about 7x faster."""
    return cv2.cvtColor(rgb.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_RGB2Lab)


def skin_mask(view: ImageView) -> np.ndarray:
    """Pixels of the analysis copy that are skin: outside the dilated lesion mask, not clipped."""
    lesion = segment_lesion(view).mask
    h, w = lesion.shape
    r = max(1, round(DILATE_FRACTION * min(h, w)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    grown = cv2.dilate(lesion.astype(np.uint8), kernel) > 0
    gray = view.analysis_gray
    unclipped = (gray > CLIP_LOW) & (gray < CLIP_HIGH)
    mask = unclipped & ~grown
    if mask.sum() < MIN_SKIN_FRACTION * mask.size:  # a lesion filling the frame: use what is left
        mask = unclipped if unclipped.sum() >= MIN_SKIN_FRACTION * mask.size else np.ones_like(mask)
    return mask


class SkinToneScorer(Scorer):
    """``ita``: the Individual Typology Angle of the skin around the lesion, degrees (-90..90).

    Larger is lighter: kept Derm-T2IM samples (light skin) score about 40..65. The group of a value is
    :func:`skin_tone_of`; it is recorded per row as ``skin_tone``. ITA has no threshold of its own: a
    manifest entry's ``expect: {skin_tone: [...]}`` decides which groups are kept.
    """

    names = ("ita",)

    def compute(self, view: ImageView) -> dict[str, float]:
        lab = fast_lab(view.analysis_rgb)
        mask = skin_mask(view)
        return {"ita": ita_degrees(_trimmed_mean(lab[..., 0][mask]), _trimmed_mean(lab[..., 2][mask]))}
