"""Synthetic copies of an image, as a memorised or re-shared image would come back: for measuring copy
detection (tests and benchmarks), never for filtering.

A hard copy is turned by one of the eight flips / rotations by 90 degrees, cropped by up to 10% on each
side independently, resized by 0.5x-2x, colour-shifted a little (gain and offset per channel) and
re-encoded as JPEG at quality 75.
"""

from __future__ import annotations

import cv2
import numpy as np

from dermgen.filters.dedup import orient

__all__ = ["hard_copy"]


def hard_copy(
    image: np.ndarray,
    rng: np.random.Generator,
    orientation: int,
    *,
    max_crop: float = 0.10,
    scale: tuple[float, float] = (0.5, 2.0),
    jpeg_quality: int = 75,
) -> np.ndarray:
    """``image`` (HxWx3 uint8 RGB) cropped, resized, colour-shifted, turned by ``orientation`` (0..7,
    see :func:`dermgen.filters.dedup.orient`) and JPEG re-encoded; random parts drawn from ``rng``."""
    h, w = image.shape[:2]
    c = rng.uniform(0.0, max_crop, 4)
    out = image[int(c[2] * h) : h - int(c[3] * h), int(c[0] * w) : w - int(c[1] * w)]
    f = float(np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1]))))
    size = (max(16, round(out.shape[1] * f)), max(16, round(out.shape[0] * f)))
    out = cv2.resize(out, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)
    gain, offset = rng.uniform(0.92, 1.08, 3), rng.uniform(-8.0, 8.0, 3)
    out = np.clip(out.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
    out = orient(out, orientation)
    ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
