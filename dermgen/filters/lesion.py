"""Lesion segmentation: Otsu on smoothed luminance, the most central large dark component."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dermgen.filters.base import ImageView, Scorer

__all__ = ["LesionScorer", "Segmentation", "segment_lesion"]

MIN_SEPARATION = 12.0  # Lab L (0..255): the dark class must be this much darker than the rest
CENTRAL_RADIUS = 0.5  # of the shorter side: dark vignette corners lie outside this disc
INNER_RADIUS = 0.35  # components touching the frame are judged by what they have inside this disc


@dataclass(frozen=True)
class Segmentation:
    """The lesion mask (at analysis size), its area fraction and centroid offset from the centre."""

    mask: np.ndarray
    area: float
    offcentre: float


def segment_lesion(view: ImageView) -> Segmentation:
    """Segment the lesion on the analysis copy; cached on the view.

    Luminance is smoothed (Gaussian, sigma 2% of the side), thresholded with Otsu, and among the
    dark connected components the one with the most pixels inside the central disc (radius half the
    side; 0.35 of the side for components touching the frame) is the lesion, which ignores dark
    vignette corners and crescents. No lesion (area 0, offcentre 1) when the
    dark class is not at least 12 L levels darker than the rest (plain or blank frames).
    """
    if "lesion" in view.cache:
        return view.cache["lesion"]
    lum = view.analysis_lab[..., 0]
    h, w = lum.shape
    side = min(h, w)
    smooth = cv2.GaussianBlur(lum, (0, 0), max(0.8, 0.02 * side))
    level, _ = cv2.threshold(
        np.clip(smooth, 0, 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU
    )
    dark = smooth <= level
    empty = Segmentation(np.zeros((h, w), bool), 0.0, 1.0)
    if dark.all() or not dark.any() or float(smooth[~dark].mean() - smooth[dark].mean()) < MIN_SEPARATION:
        view.cache["lesion"] = empty
        return empty
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(dark.astype(np.uint8), connectivity=8)
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2
    central_counts = np.bincount(labels[r2 <= (CENTRAL_RADIUS * side) ** 2], minlength=n)
    # a component touching the frame may be a vignette crescent: count only what reaches the inner disc
    inner_counts = np.bincount(labels[r2 <= (INNER_RADIUS * side) ** 2], minlength=n)
    x0, y0 = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    x1, y1 = x0 + stats[:, cv2.CC_STAT_WIDTH], y0 + stats[:, cv2.CC_STAT_HEIGHT]
    touches = (x0 == 0) | (y0 == 0) | (x1 == w) | (y1 == h)
    central_counts = np.where(touches, inner_counts, central_counts)
    central_counts[0] = 0
    best = int(np.argmax(central_counts))
    if central_counts[best] == 0:
        view.cache["lesion"] = empty
        return empty
    mask = labels == best
    cx, cy = centroids[best]
    offset = np.hypot(cx - (w - 1) / 2, cy - (h - 1) / 2) / (0.5 * np.hypot(w, h))
    seg = Segmentation(mask, float(stats[best, cv2.CC_STAT_AREA] / (h * w)), float(min(1.0, offset)))
    view.cache["lesion"] = seg
    return seg


class LesionScorer(Scorer):
    """Lesion area and position from :func:`segment_lesion`.

    ``lesion_area``: the segmented lesion as a fraction of the frame, 0..1 (0 when nothing darker
    than the skin stands out). ``lesion_offcentre``: distance of its centroid from the image centre
    divided by the half-diagonal, 0 (centred) .. 1 (in a corner, or no lesion).
    """

    names = ("lesion_area", "lesion_offcentre")

    def compute(self, view: ImageView) -> dict[str, float]:
        seg = segment_lesion(view)
        return {"lesion_area": seg.area, "lesion_offcentre": seg.offcentre}
