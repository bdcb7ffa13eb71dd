"""The scorer base class and the shared, lazily computed views of one image.

A :class:`Scorer` turns one image into one or more named scores (floats, most in 0..1). The default
scorers all measure on one copy resampled to a fixed analysis size (:data:`ANALYSIS_SIDE` px on the
longer side, downscaled or upscaled), so that the same image at 112, 512 or 768 px, or upscaled from
112 to 512, gives the same scores and the same decision. Fixed-size copies are computed once per image
by :class:`ImageView` and shared by all scorers. The ``work_*`` and ``small_*`` copies (never upscaled)
are kept for the fingerprints of the duplicate and memorisation checks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cached_property
from typing import Any, ClassVar

import cv2
import numpy as np

__all__ = [
    "ANALYSIS_SIDE",
    "FINE_SIDE",
    "SMALL_SIDE",
    "WORK_SIDE",
    "ImageView",
    "Scorer",
    "as_view",
    "check_image",
]

# Longer side of the copy every default scorer measures on. 128 px is just above the smallest images
# the filter must judge (112 px crops), so those lose nothing, and a 512 px image downscaled to it
# keeps every structure a person drops an image for (strokes, hair, rulers, casts, framing).
ANALYSIS_SIDE = 128
# Longer side of the copy the blur score measures on: fine enough to see a Gaussian blur of 4 px at
# 512 px, coarse enough that a 112 px image upscaled to it still counts as sharp.
FINE_SIDE = 256
WORK_SIDE = 256  # longer side of the copy used for fine structure (edges, hair, ink, rulers)
SMALL_SIDE = 128  # longer side of the copy used for colour, exposure and lesion shape
MIN_SIDE = 8


def check_image(image: Any) -> np.ndarray:
    """Return ``image`` as a contiguous HxWx3 uint8 RGB array, or raise ValueError saying what is wrong.

    Greyscale (HxW or HxWx1) is expanded to RGB and an alpha channel (HxWx4) is dropped.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array (HxWx3 uint8 RGB), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must have dtype uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be HxWx3 (RGB), got shape {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(
            f"image must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {image.shape[1]}x{image.shape[0]}"
        )
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[..., :3]
    return np.ascontiguousarray(image)


def _downscale(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _resample(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` resized so its longer side is ``side`` (area averaging down, bicubic up)."""
    h, w = image.shape[:2]
    if max(h, w) == side:
        return image
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, size, interpolation=interp)


class ImageView:
    """One image and its derived copies, each computed on first use and then cached.

    ``rgb`` is the original; ``analysis_*`` are resampled to exactly :data:`ANALYSIS_SIDE` px on the
    longer side (what every default scorer measures on), ``fine_rgb`` to :data:`FINE_SIDE` (blur);
    ``work_*`` are at most :data:`WORK_SIDE` px on the longer side, ``small_*``
    at most :data:`SMALL_SIDE` px (images are never upscaled). Lab arrays are float32 with L in 0..255
    and a, b signed (OpenCV's 8-bit Lab with 128 subtracted).
    """

    def __init__(self, image: np.ndarray) -> None:
        self.rgb = check_image(image)
        self.cache: dict[str, Any] = {}  # scorers may store shared intermediate results here

    @cached_property
    def analysis_rgb(self) -> np.ndarray:
        return _resample(self.rgb, ANALYSIS_SIDE)

    @cached_property
    def analysis_gray(self) -> np.ndarray:
        return cv2.cvtColor(self.analysis_rgb, cv2.COLOR_RGB2GRAY)

    @cached_property
    def analysis_lab(self) -> np.ndarray:
        lab = cv2.cvtColor(self.analysis_rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
        lab[..., 1:] -= 128.0
        return lab

    @cached_property
    def fine_rgb(self) -> np.ndarray:
        return _resample(self.rgb, FINE_SIDE)

    @cached_property
    def work_rgb(self) -> np.ndarray:
        return _downscale(self.rgb, WORK_SIDE)

    @cached_property
    def work_gray(self) -> np.ndarray:
        return cv2.cvtColor(self.work_rgb, cv2.COLOR_RGB2GRAY)

    @cached_property
    def work_lab(self) -> np.ndarray:
        lab = cv2.cvtColor(self.work_rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
        lab[..., 1:] -= 128.0
        return lab

    @cached_property
    def small_rgb(self) -> np.ndarray:
        return _downscale(self.work_rgb, SMALL_SIDE)

    @cached_property
    def small_gray(self) -> np.ndarray:
        return cv2.cvtColor(self.small_rgb, cv2.COLOR_RGB2GRAY)

    @cached_property
    def small_lab(self) -> np.ndarray:
        lab = cv2.cvtColor(self.small_rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
        lab[..., 1:] -= 128.0
        return lab


def as_view(image: np.ndarray | ImageView) -> ImageView:
    """Wrap an array in an :class:`ImageView` (a view is returned as is)."""
    return image if isinstance(image, ImageView) else ImageView(image)


class Scorer(ABC):
    """Turns an image into one or more named scores.

    Subclasses set ``names`` (the score names they produce, all in
    :data:`dermgen.filters.names.SCORE_NAMES`) and implement :meth:`compute`. :meth:`score` accepts
    an HxWx3 uint8 RGB array or an :class:`ImageView` and returns a float for single-score scorers,
    a dict name -> float otherwise. Scorers are stateless unless documented (duplicates).
    """

    names: ClassVar[tuple[str, ...]] = ()

    @property
    def name(self) -> str:
        """The score name of a single-score scorer (the first name otherwise)."""
        return self.names[0]

    @abstractmethod
    def compute(self, view: ImageView) -> dict[str, float]:
        """Scores of one image view, keyed by name (every name in ``names``)."""

    def score(self, image: np.ndarray | ImageView) -> float | dict[str, float]:
        """Score one image; a float for single-score scorers, else a dict keyed by name."""
        out = self.compute(as_view(image))
        return out[self.names[0]] if len(self.names) == 1 else out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(names={self.names})"
