"""Hair: dark thin elongated structures found by black-hat morphology (as DullRazor does)."""

from __future__ import annotations

import cv2
import numpy as np

from dermgen.filters.base import ANALYSIS_SIDE, ImageView, Scorer

__all__ = ["HairScorer", "hair_mask"]

_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
BLACKHAT_LEVEL = 12  # grey levels darker than the 5 px closing around it (at 128 px)
MIN_EXTENT = 10  # px at 128 px: a hair component spans at least this much
MAX_FILL = 0.6  # area / extent^2 below this: elongated, not a blob or dot


def hair_mask(view: ImageView) -> np.ndarray:
    """Boolean mask (at analysis size) of pixels on long thin dark structures; cached on the view."""
    if "hair_mask" in view.cache:
        return view.cache["hair_mask"]
    blackhat = cv2.morphologyEx(view.analysis_gray, cv2.MORPH_BLACKHAT, _KERNEL)
    mask = (blackhat > BLACKHAT_LEVEL).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    extent = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    area = stats[:, cv2.CC_STAT_AREA]
    scale = max(mask.shape) / ANALYSIS_SIDE
    keep = (extent >= MIN_EXTENT * scale) & (area < MAX_FILL * extent.astype(np.float64) ** 2)
    keep[0] = False
    out = keep[labels]
    view.cache["hair_mask"] = out
    return out


class HairScorer(Scorer):
    """Hair density, 0..1: fraction of the frame on long thin dark curves (black-hat, 5 px at 128 px).

    Components of the black-hat mask count only when they span >= 10 px and are elongated, so pigment
    dots and globules inside a lesion do not. Kept samples (a few hairs, fuzzy lesion borders) score
    < 0.05; dozens of hairs across the frame score 0.1..0.3; dense scalp hair more.
    """

    names = ("hair",)

    def compute(self, view: ImageView) -> dict[str, float]:
        return {"hair": float(hair_mask(view).mean())}
