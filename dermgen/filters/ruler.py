"""Rulers and scale bars: long straight edges across the frame."""

from __future__ import annotations

import cv2
import numpy as np

from dermgen.filters.base import ImageView, Scorer

__all__ = ["RulerScorer", "long_lines"]

MIN_LINE = 0.5  # a segment counts when at least half the image side long
BORDER = 0.04  # of the side, ignored along the frame: frame edges and crop borders are not rulers


def long_lines(view: ImageView, min_fraction: float = MIN_LINE) -> np.ndarray:
    """Straight segments (N x 4: x0, y0, x1, y1 at analysis size) at least ``min_fraction`` of the side long."""
    key = f"long_lines_{min_fraction}"
    if key in view.cache:
        return view.cache[key]
    gray = view.analysis_gray
    side = min(gray.shape)
    edges = cv2.Canny(gray, 50, 150)
    border = max(1, round(BORDER * side))
    edges[:border, :] = 0
    edges[-border:, :] = 0
    edges[:, :border] = 0
    edges[:, -border:] = 0
    found = cv2.HoughLinesP(
        edges, 1, np.pi / 180, threshold=40, minLineLength=max(8, int(min_fraction * side)), maxLineGap=4
    )
    lines = np.zeros((0, 4), np.float32) if found is None else found.reshape(-1, 4).astype(np.float32)
    view.cache[key] = lines
    return lines


class RulerScorer(Scorer):
    """Ruler / scale-bar dominance, 0..1: total length of straight segments longer than half the
    side (Canny + probabilistic Hough at 128 px), divided by twice the side, capped at 1.

    Skin and lesions have no long straight edges, and the small scale bars of kept samples are
    shorter than half the side, so kept samples score 0 at 512 px (<= 0.53 at other sizes, where
    a streak inside a lesion may pass for a line). A ruler strip across the frame has two long
    edges plus tick rows: 0.3..1.
    """

    names = ("ruler",)

    def compute(self, view: ImageView) -> dict[str, float]:
        lines = long_lines(view)
        if len(lines) == 0:
            return {"ruler": 0.0}
        length = np.hypot(lines[:, 2] - lines[:, 0], lines[:, 3] - lines[:, 1]).sum()
        return {"ruler": float(min(1.0, length / (2.0 * min(view.analysis_gray.shape))))}
