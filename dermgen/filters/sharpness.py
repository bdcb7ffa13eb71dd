"""Blur: how sharp the sharpest edges of the image are, independent of their contrast."""

from __future__ import annotations

import cv2
import numpy as np

from dermgen.filters.base import ImageView, Scorer

__all__ = ["BlurScorer"]

_RANGE_KERNEL = np.ones((5, 5), np.uint8)
MIN_LOCAL_RANGE = 4.0  # grey levels: ignore flat areas where the ratio is only noise
EDGE_QUANTILE = 99.9  # the sharpest 0.1% of edge pixels


class BlurScorer(Scorer):
    """Blurriness, 0..1: ``1 - 2 * s`` where ``s`` is the 99.9th percentile of gradient / local range.

    At the fine size (256 px, resampled up or down), the gradient magnitude (Sobel / 8) of each pixel is divided by the grey-level range of
    its 5x5 neighbourhood; a perfect step edge gives ~0.5 (blur 0) and an edge blurred with a Gaussian
    of sigma s px gives about 1 / (2.5 s). Taking the sharpest 0.1% makes the score depend on the
    sharpest detail (hair, speckle, specular spot) rather than on how much of the frame is plain skin.
    Kept samples score 0.01..0.31 at 512 px and <= 0.37 when given at 112 px (upscaled to 256); a
    Gaussian blur of sigma >= 4 px at 512 px scores > 0.37.
    """

    names = ("blur",)

    def compute(self, view: ImageView) -> dict[str, float]:
        gray = cv2.cvtColor(view.fine_rgb.astype(np.float32), cv2.COLOR_RGB2GRAY)
        gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
        grad = cv2.magnitude(gx, gy) / 8.0
        local_range = cv2.dilate(gray, _RANGE_KERNEL) - cv2.erode(gray, _RANGE_KERNEL)
        mask = local_range > MIN_LOCAL_RANGE
        if int(mask.sum()) < 10:  # a flat frame has no edge at all
            return {"blur": 1.0}
        ratio = grad[mask] / local_range[mask]
        k = min(ratio.size - 1, int(round(EDGE_QUANTILE / 100 * (ratio.size - 1))))
        sharp = float(np.partition(ratio, k)[k])
        return {"blur": float(np.clip(1.0 - 2.0 * sharp, 0.0, 1.0))}
