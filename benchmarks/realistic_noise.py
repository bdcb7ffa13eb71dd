"""Noise that looks like the Derm-T2IM frames the study's authors discarded by hand.

The synthetic variants of ``filterlab.noise`` are thin and tidy; the real discarded frames
(``tests/assets/derm-t2im-discarded``) show broad surgical-marker work: hatched bands and loops drawn
around the lesion, scattered scribbles and dots, in violet, purple and blue, 1.5..4% of the frame wide,
covering a few percent to ~40% of it; hairy scalp frames; blue/cyan casts. This module makes such frames
from clean ones, deterministically (category + seed), with every size a fraction of the frame so the
same call gives the same picture at any resolution.

``REAL_LIKE`` maps each heavy category to the reason a person gives for dropping it (the filter must
drop it with that reason); ``KEPT_LIKE`` are the mild marks the authors left in kept images.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from filterlab import noise

__all__ = ["KEPT_LIKE", "REAL_LIKE", "make_real_like"]

# Marker colours seen in the discarded frames (RGB): violet, purple, royal and ultramarine blue.
INK_COLOURS: tuple[tuple[int, int, int], ...] = (
    (112, 60, 200),
    (120, 50, 190),
    (95, 45, 170),
    (140, 70, 200),
    (70, 70, 200),
    (60, 60, 180),
    (80, 90, 215),
)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    base = INK_COLOURS[int(rng.integers(len(INK_COLOURS)))]
    return tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in base)


def _ink_layer(img: np.ndarray, draw: Callable[[np.ndarray], None], rng: np.random.Generator) -> np.ndarray:
    """Draw ink on a mask and blend it like marker on skin (multiply, soft edges, slight opacity)."""
    h, w = img.shape[:2]
    layer = np.zeros((h, w, 3), np.uint8)
    draw(layer)
    alpha = (layer.max(axis=2) > 0).astype(np.float32)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(0.5, 0.002 * min(h, w)))[..., None]
    alpha *= rng.uniform(0.8, 0.97)
    colour = layer.astype(np.float32)
    out = img.astype(np.float32) * (1 - alpha) + colour * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


def _centre(img: np.ndarray) -> tuple[float, float, float]:
    cx, cy, r = noise._lesion_centre(img)
    side = min(img.shape[:2])
    return cx, cy, float(np.clip(r, 0.12 * side, 0.3 * side))


def _width(rng: np.random.Generator, side: int, lo: float = 0.012, hi: float = 0.04) -> int:
    return max(1, int(round(rng.uniform(lo, hi) * side)))


def hatched_band(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A band of zig-zag hatching drawn around the lesion (the study's d01, d04, d07)."""
    h, w = img.shape[:2]
    side = min(h, w)
    cx, cy, r = _centre(img)
    r_in = r * rng.uniform(1.05, 1.3)
    r_out = r_in + rng.uniform(0.08, 0.2) * side
    start = rng.uniform(0, 2 * np.pi)
    span = rng.uniform(1.0, 2.0) * np.pi
    n = int(rng.integers(30, 70))
    ang = np.linspace(start, start + span, n)
    radius = np.where(np.arange(n) % 2 == 0, r_in, r_out) * rng.uniform(0.93, 1.07, n)
    squash = rng.uniform(0.8, 1.2)
    pts = np.stack([cx + radius * np.cos(ang), cy + squash * radius * np.sin(ang)], 1)
    colour, width = _colour(rng), _width(rng, side)

    def draw(layer: np.ndarray) -> None:
        cv2.polylines(layer, [np.round(pts * 16).astype(np.int32)], False, colour, width, cv2.LINE_AA, 4)

    return _ink_layer(img, draw, rng)


def loops(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One to three wobbly loops drawn around the lesion, sometimes leaving the frame (d19, d22)."""
    h, w = img.shape[:2]
    side = min(h, w)
    cx, cy, r = _centre(img)
    colour, width = _colour(rng), _width(rng, side, 0.015, 0.04)
    curves = []
    for _ in range(int(rng.integers(1, 4))):
        rad = r * rng.uniform(1.2, 2.0)
        ang = np.linspace(0, rng.uniform(1.6, 2.1) * 2 * np.pi, 120) + rng.uniform(0, 2 * np.pi)
        wobble = 1 + 0.12 * np.sin(ang * rng.uniform(2, 6) + rng.uniform(0, 6))
        rad_t = rad * wobble * np.linspace(1, rng.uniform(0.85, 1.15), ang.size)
        curves.append(
            np.stack([cx + rad_t * np.cos(ang), cy + rad_t * rng.uniform(0.8, 1.2) * np.sin(ang)], 1)
        )

    def draw(layer: np.ndarray) -> None:
        for pts in curves:
            cv2.polylines(layer, [np.round(pts * 16).astype(np.int32)], False, colour, width, cv2.LINE_AA, 4)

    return _ink_layer(img, draw, rng)


def scribbles(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Short hatching strokes and dots scattered around the lesion (d16)."""
    h, w = img.shape[:2]
    side = min(h, w)
    cx, cy, r = _centre(img)
    colour = _colour(rng)
    width = _width(rng, side, 0.012, 0.03)
    strokes, dots = [], []
    for _ in range(int(rng.integers(6, 12))):
        a = rng.uniform(0, 2 * np.pi)
        d = r * rng.uniform(1.2, 2.4)
        px, py = cx + d * np.cos(a), cy + d * np.sin(a)
        direction = rng.uniform(0, np.pi)
        for k in range(int(rng.integers(3, 7))):  # a little bundle of parallel strokes
            ln = rng.uniform(0.06, 0.16) * side
            off = k * width * 2.2
            ox, oy = px + off * np.cos(direction + np.pi / 2), py + off * np.sin(direction + np.pi / 2)
            strokes.append(
                ((ox, oy), (ox + ln * np.cos(direction), oy + ln * np.sin(direction + rng.normal(0, 0.1))))
            )
    for _ in range(int(rng.integers(2, 8))):
        a = rng.uniform(0, 2 * np.pi)
        d = r * rng.uniform(1.2, 2.6)
        dots.append(((cx + d * np.cos(a), cy + d * np.sin(a)), max(1, int(rng.uniform(0.01, 0.02) * side))))

    def draw(layer: np.ndarray) -> None:
        for p0, p1 in strokes:
            cv2.line(layer, tuple(int(v) for v in p0), tuple(int(v) for v in p1), colour, width, cv2.LINE_AA)
        for c, rad in dots:
            cv2.circle(layer, tuple(int(v) for v in c), rad, colour, -1, cv2.LINE_AA)

    return _ink_layer(img, draw, rng)


def hairy_scalp(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A frame covered with combed dark or grey hair, a small lesion somewhere under it (d13)."""
    return noise.add_hair(img, rng, (250, 450), (0.003, 0.006), flow=rng.uniform(0, np.pi), length=(0.3, 0.8))


def blue_cast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A strong blue or cyan cast over the whole frame (d10, d25 at their most extreme)."""
    colour = np.array([(40, 90, 230), (30, 170, 220), (60, 110, 240)][int(rng.integers(3))], np.float32)
    s = rng.uniform(0.5, 0.75)
    f = img.astype(np.float32)
    out = (1 - s) * f + s * (f * colour / 255.0 * 1.2 + colour * 0.25)
    return np.clip(out, 0, 255).astype(np.uint8)


def few_dots(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One to three small ink dots next to the lesion: kept by the authors."""
    return noise.add_ink_dots(img, rng, (1, 3), (0.004, 0.008))


def few_hairs(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two to five thin hairs: kept by the authors."""
    return noise.add_hair(img, rng, (2, 5), (0.002, 0.004))


# heavy category -> (generator, the reasons a person would accept for dropping it; the first is the usual)
REAL_LIKE: dict[str, tuple[Callable[[np.ndarray, np.random.Generator], np.ndarray], tuple[str, ...]]] = {
    "ink_band": (hatched_band, ("ink",)),
    "ink_loops": (loops, ("ink",)),
    "ink_scribbles": (scribbles, ("ink",)),
    "hairy_scalp": (hairy_scalp, ("hair", "off_domain")),
    "blue_cast": (blue_cast, ("tint", "off_domain")),
}
KEPT_LIKE: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "few_dots": few_dots,
    "few_hairs": few_hairs,
}


def make_real_like(img: np.ndarray, category: str, seed: object = 0) -> np.ndarray:
    """One real-like noisy (``REAL_LIKE``) or kept-like (``KEPT_LIKE``) variant of a clean RGB image."""
    rng = noise.rng_for("real-like", category, seed)
    if category in REAL_LIKE:
        return REAL_LIKE[category][0](img, rng)
    if category in KEPT_LIKE:
        return KEPT_LIKE[category](img, rng)
    raise ValueError(f"unknown real-like category {category!r}; expected one of {[*REAL_LIKE, *KEPT_LIKE]}")
