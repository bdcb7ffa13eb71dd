"""Blue smear: the largest patch of vivid pure blue in the frame, a colour no kept lesion shows.

A blue-white veil or a blue-grey area of a lesion is a greyish blue (Lab chroma about 30..40 in the kept
samples, none of which has more than 4 px of vivid blue in one patch at 128 px); a smear of blue pigment or a generation artefact over part of a lesion is a vivid cobalt blue
(chroma 45..70, almost no red). The score counts such pixels only where they form one connected patch,
so scattered specks of blue texture, a few kept ink dots and the blue fringe some dermoscopes leave in
the frame's corners do not add up.
"""

from __future__ import annotations

import cv2
import numpy as np

from dermgen.filters.base import ImageView, Scorer

__all__ = ["SmearScorer", "largest_patch", "smear_mask"]

SMEAR_MIN_CHROMA = 45.0  # Lab chroma: kept veils and blue-grey areas stay below, vivid blue pigment above
SMEAR_HUE = (-100.0, -55.0)  # Lab hue angle in degrees: pure blue (violet and purple marker ink are `ink`)
SMEAR_MIN_CONTRAST = 30.0  # b* at least this far below the frame's median b*: bluer than the frame itself
SMEAR_BORDER = 0.04  # of the side: the outer band is left out (blue lens fringes in dark corners)


def smear_mask(view: ImageView) -> np.ndarray:
    """Boolean mask (at analysis size) of vivid pure-blue pixels outside the frame's outer 4% band.

    A pixel counts when its Lab chroma is >= 45, its hue is between -100 and -55 degrees (blue), and its
    b* is at least 30 below the frame's median b* (a lavender-lit frame is not a smear).
    """
    lab = view.analysis_lab
    a, b = lab[..., 1], lab[..., 2]
    chroma, hue = cv2.cartToPolar(a, b, angleInDegrees=True)  # hue in 0..360: -100..-55 is 260..305
    lo, hi = SMEAR_HUE[0] + 360.0, SMEAR_HUE[1] + 360.0
    mask = (chroma >= SMEAR_MIN_CHROMA) & (hue >= lo) & (hue <= hi) & (b <= np.median(b) - SMEAR_MIN_CONTRAST)
    h, w = mask.shape
    edge = round(SMEAR_BORDER * min(h, w))
    if edge:
        mask[:edge, :] = mask[-edge:, :] = False
        mask[:, :edge] = mask[:, -edge:] = False
    return mask


def largest_patch(mask: np.ndarray) -> int:
    """Pixels in the largest 8-connected patch of ``mask`` (0 when empty)."""
    if not mask.any():
        return 0
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return int(stats[1:, cv2.CC_STAT_AREA].max())


class SmearScorer(Scorer):
    """Area of the largest connected patch of vivid pure blue (see :func:`smear_mask`) / frame area, 0..1.

    Measured at the analysis size (128 px), so the same frame scores the same at any resolution. Kept
    samples score <= 0.00025 (a few pixels: blue-white veils and blue-grey areas are not vivid enough),
    the same with a few kept ink dots or mild exposure and tint changes <= 0.00055; the study's discarded
    frame with a blue smear over part of its lesion (d10) 0.0038.
    """

    names = ("smear",)

    def compute(self, view: ImageView) -> dict[str, float]:
        mask = smear_mask(view)
        return {"smear": largest_patch(mask) / float(mask.size)}
