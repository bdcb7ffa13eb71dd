"""Deterministic synthesis of noisy generations from clean ones, for filter tests and calibration.

Every generator takes a clean HxWx3 uint8 RGB image and a ``numpy.random.Generator`` (or makes an
off-domain frame from nothing) and returns a new image; nothing depends on global state, so a
category, a severity and a seed always give the same image (:func:`make_noisy`).

The strengths are explicit: :data:`MILD` holds the parameters of variants the study says also
appear in KEPT images (a few hairs, small ink dots, a small scale bar, a slight white-balance or
exposure shift) and :data:`HEAVY` those of variants that must be dropped. Sizes are fractions of
the image side, so the same parameters work at any resolution.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = [
    "CATEGORIES",
    "COPY_TRANSFORMS",
    "EXPECTED_REASON",
    "HEAVY",
    "MILD",
    "add_hair",
    "add_ink_dots",
    "add_ink_strokes",
    "add_ruler",
    "add_scale_bar",
    "apply_blur",
    "apply_clipped",
    "apply_tint",
    "apply_washout",
    "make_noisy",
    "near_copy",
    "off_domain_frame",
    "rng_for",
    "split_samples",
]

# Heavy-noise categories, each with the score whose bound is expected to drop it.
EXPECTED_REASON: dict[str, str] = {
    "ink": "ink",
    "blur": "blur",
    "washout": "contrast",
    "tint": "tint",
    "overexposed": "clipped",
    "underexposed": "clipped",
    "hair": "hair",
    "ruler": "ruler",
    "off_domain": "off_domain",
}
CATEGORIES: tuple[str, ...] = tuple(EXPECTED_REASON)

MARKER_COLOURS: tuple[tuple[int, int, int], ...] = (
    (112, 48, 160),  # violet gentian marker
    (88, 40, 150),
    (60, 70, 190),  # blue marker
    (40, 60, 160),
    (130, 60, 180),
)

# Explicit strengths. Fractions are of min(H, W).
MILD: dict[str, dict[str, Any]] = {
    # one or two small ink dots (what kept images show)
    "ink": {"n_dots": (1, 3), "radius": (0.004, 0.008)},
    "blur": {"sigma": (0.4, 0.8)},
    "washout": {"alpha": (0.85, 0.92)},
    "tint": {"gain": (0.06, 0.1)},
    "overexposed": {"gain": (1.05, 1.12), "offset": (0, 6)},
    "underexposed": {"gain": (0.88, 0.94), "offset": (-6, 0)},
    "hair": {"n_hairs": (2, 5), "thickness": (0.002, 0.004)},
    "ruler": {"length": (0.2, 0.35), "n_ticks": (8, 12)},
}
HEAVY: dict[str, dict[str, Any]] = {
    # two to four thick marker curves around the lesion
    "ink": {"n_strokes": (2, 4), "thickness": (0.015, 0.03)},
    "blur": {"sigma": (0.008, 0.016)},  # as a fraction of the side: 4..8 px at 512
    "washout": {"alpha": (0.2, 0.35)},
    "tint": {"strength": (0.65, 0.85)},
    "overexposed": {"gain": (1.9, 2.6), "offset": (20, 50)},
    "underexposed": {"gain": (0.45, 0.65), "offset": (-90, -60)},
    "hair": {"n_hairs": (70, 140), "thickness": (0.002, 0.005)},
    "ruler": {"width": (0.18, 0.3)},
}


def rng_for(*parts: object) -> np.random.Generator:
    """A generator seeded from the sha256 of the parts (stable across runs and machines)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def split_samples(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[Path]]:
    """Deterministic 50/50 split into (calibration, test), stratified by parent folder (benign/malignant).

    Within each folder, files are ordered by the sha256 of their file name; the first half (rounded
    down) is the calibration split.
    """
    groups: dict[str, list[Path]] = {}
    for p in map(Path, paths):
        groups.setdefault(p.parent.name, []).append(p)
    calibration: list[Path] = []
    test: list[Path] = []
    for name in sorted(groups):
        ordered = sorted(groups[name], key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())
        half = len(ordered) // 2
        calibration += ordered[:half]
        test += ordered[half:]
    return calibration, test


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def _i(rng: np.random.Generator, lo_hi: tuple[int, int]) -> int:
    return int(rng.integers(lo_hi[0], lo_hi[1] + 1))


def _lesion_centre(img: np.ndarray) -> tuple[float, float, float]:
    """Rough centre (x, y) and radius of the darkest blob, for placing strokes around it."""
    h, w = img.shape[:2]
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    small = cv2.GaussianBlur(cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA), (0, 0), 2)
    mask = small <= np.percentile(small, 20)
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean() * w / 64, ys.mean() * h / 64
    radius = np.sqrt(mask.sum() / np.pi) * min(h, w) / 64
    return float(cx), float(cy), float(radius)


def _curve(rng: np.random.Generator, p0: np.ndarray, p1: np.ndarray, bend: float, n: int = 40) -> np.ndarray:
    """Points of a quadratic Bezier curve from p0 to p1 with a random control point."""
    mid = (p0 + p1) / 2
    d = p1 - p0
    normal = np.array([-d[1], d[0]])
    ctrl = mid + normal * rng.uniform(-bend, bend)
    t = np.linspace(0, 1, n)[:, None]
    return ((1 - t) ** 2) * p0 + 2 * (1 - t) * t * ctrl + (t**2) * p1


def _draw_polyline(img: np.ndarray, pts: np.ndarray, colour: tuple[int, int, int], thickness: int) -> None:
    cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, colour, thickness, cv2.LINE_AA, 4)


def add_ink_strokes(
    img: np.ndarray, rng: np.random.Generator, n_strokes: tuple[int, int], thickness: tuple[float, float]
) -> np.ndarray:
    """Thick purple/blue surgical-marker arcs around the lesion (partial ellipses with jitter)."""
    out = img.copy()
    h, w = img.shape[:2]
    side = min(h, w)
    cx, cy, r = _lesion_centre(img)
    r = max(r, 0.12 * side)
    for _ in range(_i(rng, n_strokes)):
        colour = MARKER_COLOURS[int(rng.integers(len(MARKER_COLOURS)))]
        colour = tuple(int(np.clip(c + rng.integers(-15, 16), 0, 255)) for c in colour)
        rad = r * rng.uniform(1.1, 1.6)
        start = rng.uniform(0, 2 * np.pi)
        span = rng.uniform(0.6, 1.6) * np.pi
        ang = np.linspace(start, start + span, 60)
        jitter = 1 + 0.05 * np.sin(ang * rng.uniform(2, 5) + rng.uniform(0, 6))
        pts = np.stack(
            [cx + rad * jitter * np.cos(ang), cy + rad * jitter * np.sin(ang) * rng.uniform(0.8, 1.2)], 1
        )
        _draw_polyline(out, pts, colour, max(2, int(round(_u(rng, thickness) * side))))
    return out


def add_ink_dots(
    img: np.ndarray, rng: np.random.Generator, n_dots: tuple[int, int], radius: tuple[float, float]
) -> np.ndarray:
    """A few small marker dots near the lesion (seen in kept images)."""
    out = img.copy()
    h, w = img.shape[:2]
    side = min(h, w)
    cx, cy, r = _lesion_centre(img)
    r = max(r, 0.1 * side)
    for _ in range(_i(rng, n_dots)):
        colour = MARKER_COLOURS[int(rng.integers(len(MARKER_COLOURS)))]
        a = rng.uniform(0, 2 * np.pi)
        d = r * rng.uniform(1.1, 1.5)
        centre = (int(np.clip(cx + d * np.cos(a), 0, w - 1)), int(np.clip(cy + d * np.sin(a), 0, h - 1)))
        cv2.circle(out, centre, max(1, int(round(_u(rng, radius) * side))), colour, -1, cv2.LINE_AA)
    return out


def apply_blur(img: np.ndarray, rng: np.random.Generator, sigma: tuple[float, float]) -> np.ndarray:
    """Gaussian blur; ``sigma`` in pixels if its upper bound is >= 0.3, else as a fraction of the side."""
    s = _u(rng, sigma)
    if sigma[1] < 0.3:
        s *= min(img.shape[:2])
    return cv2.GaussianBlur(img, (0, 0), s)


def apply_washout(img: np.ndarray, rng: np.random.Generator, alpha: tuple[float, float]) -> np.ndarray:
    """Washed-out colour: blend with a light grey haze, keeping ``alpha`` of the original contrast."""
    a = _u(rng, alpha)
    haze = np.array([rng.uniform(190, 235)] * 3, dtype=np.float32) + rng.uniform(-8, 8, 3)
    out = a * img.astype(np.float32) + (1 - a) * haze
    return np.clip(out, 0, 255).astype(np.uint8)


_TINTS = (
    (40, 200, 60),  # green
    (40, 90, 230),  # blue
    (30, 200, 210),  # cyan
    (230, 220, 30),  # yellow
    (230, 30, 200),  # magenta
)
# Orange and violet casts are left out on purpose: on pink or lavender skin they give plausible images,
# within the colour range of the kept samples, so they are not "extreme" tints.


def _lab_hue(rgb: np.ndarray) -> float:
    lab = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1, 1, 3), cv2.COLOR_RGB2LAB)
    a, b = np.median(lab[:, 0, 1].astype(np.float32) - 128), np.median(lab[:, 0, 2].astype(np.float32) - 128)
    return float(np.arctan2(b, a))


def _far_tint(img: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """A cast colour whose hue is at least 90 degrees from the image's own colour (so the cast is extreme)."""
    own = _lab_hue(cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA))
    far = [
        c
        for c in _TINTS
        if abs(np.angle(np.exp(1j * (_lab_hue(np.array([[c]], np.uint8)) - own)))) >= np.pi / 2
    ]
    pool = far or list(_TINTS)
    return pool[int(rng.integers(len(pool)))]


def apply_tint(
    img: np.ndarray,
    rng: np.random.Generator,
    strength: tuple[float, float] | None = None,
    gain: tuple[float, float] | None = None,
) -> np.ndarray:
    """An extreme colour cast (blend with a saturated colour, ``strength``) or a white-balance shift (``gain``).

    The cast colour is drawn among green, blue, cyan, yellow and magenta whose hue is at least 90 degrees
    away from the image's own median hue: a blue cast on an already lavender image is within what the
    kept samples show, not an extreme tint.
    """
    f = img.astype(np.float32)
    if strength is not None:
        colour = np.array(_far_tint(img, rng), dtype=np.float32)
        s = _u(rng, strength)
        # multiply-and-blend, like a strong coloured filter over the lens
        out = (1 - s) * f + s * (f * colour / 255.0 * 1.2 + colour * 0.25)
    else:
        g = _u(rng, gain or (0.05, 0.1))
        gains = 1 + rng.uniform(-g, g, 3)
        out = f * gains
    return np.clip(out, 0, 255).astype(np.uint8)


def apply_clipped(
    img: np.ndarray, rng: np.random.Generator, gain: tuple[float, float], offset: tuple[float, float]
) -> np.ndarray:
    """Exposure change ``img * gain + offset`` clipped to 0..255 (over: gain > 1, under: offset < 0)."""
    out = img.astype(np.float32) * _u(rng, gain) + _u(rng, offset)
    return np.clip(out, 0, 255).astype(np.uint8)


def _hair_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    base = rng.uniform(10, 70)
    return (int(base + rng.uniform(0, 25)), int(base + rng.uniform(0, 12)), int(base))


def add_hair(
    img: np.ndarray,
    rng: np.random.Generator,
    n_hairs: tuple[int, int],
    thickness: tuple[float, float],
    flow: float | None = None,
    length: tuple[float, float] = (0.2, 0.6),
) -> np.ndarray:
    """Dark thin curved hairs; ``flow`` (radians) makes them roughly parallel, like combed scalp hair."""
    out = img.copy()
    h, w = img.shape[:2]
    side = min(h, w)
    for _ in range(_i(rng, n_hairs)):
        p0 = np.array([rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h])
        ang = rng.uniform(0, 2 * np.pi) if flow is None else flow + rng.normal(0, 0.25)
        ln = _u(rng, length) * side
        p1 = p0 + ln * np.array([np.cos(ang), np.sin(ang)])
        pts = _curve(rng, p0, p1, 0.3)
        _draw_polyline(out, pts, _hair_colour(rng), max(1, int(round(_u(rng, thickness) * side))))
    return out


def add_scale_bar(
    img: np.ndarray, rng: np.random.Generator, length: tuple[float, float], n_ticks: tuple[int, int]
) -> np.ndarray:
    """A small dark scale bar with ticks near the bottom, as in some kept images."""
    out = img.copy()
    h, w = img.shape[:2]
    side = min(h, w)
    ln = _u(rng, length) * w
    x0 = rng.uniform(0.05 * w, w - ln - 0.05 * w)
    y0 = rng.uniform(0.8, 0.92) * h
    colour = (int(rng.integers(20, 60)),) * 3
    th = max(1, int(round(0.003 * side)))
    cv2.line(out, (int(x0), int(y0)), (int(x0 + ln), int(y0)), colour, th, cv2.LINE_AA)
    n = _i(rng, n_ticks)
    for k in range(n + 1):
        x = int(x0 + ln * k / n)
        tick = (0.025 if k % 5 == 0 else 0.012) * side
        cv2.line(out, (x, int(y0)), (x, int(y0 - tick)), colour, th, cv2.LINE_AA)
    return out


def add_ruler(img: np.ndarray, rng: np.random.Generator, width: tuple[float, float]) -> np.ndarray:
    """A ruler across the whole frame: a light strip ``width`` of the side wide, ticks and numbers."""
    h, w = img.shape[:2]
    side = min(h, w)
    big = 2 * max(h, w)
    strip_w = _u(rng, width) * side
    canvas = np.zeros((big, big, 3), np.uint8)
    mask = np.zeros((big, big), np.uint8)
    y0 = int(big / 2 - strip_w / 2)
    y1 = int(big / 2 + strip_w / 2)
    tint = rng.choice([0, 1, 2])
    base = np.array([(245, 245, 240), (240, 225, 150), (215, 220, 225)][tint], np.uint8)
    canvas[y0:y1] = base
    mask[y0:y1] = 255
    ink = (20, 20, 20)
    th = max(1, int(round(0.004 * side)))
    cv2.line(canvas, (0, y0), (big, y0), ink, th)
    cv2.line(canvas, (0, y1 - 1), (big, y1 - 1), ink, th)
    step = max(3, int(round(rng.uniform(0.018, 0.03) * side)))
    for k, x in enumerate(range(0, big, step)):
        tick = strip_w * (0.45 if k % 10 == 0 else 0.3 if k % 5 == 0 else 0.18)
        cv2.line(canvas, (x, y0), (x, int(y0 + tick)), ink, th)
        if k % 10 == 0:
            scale = max(0.3, side / 512 * 0.8)
            cv2.putText(
                canvas,
                str(k // 10),
                (x + 2, int(y1 - strip_w * 0.15)),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                ink,
                th,
            )
    angle = rng.uniform(-35, 35) + (90 if rng.random() < 0.3 else 0)
    offset = rng.uniform(-0.25, 0.25) * side
    m = cv2.getRotationMatrix2D((big / 2, big / 2), angle, 1.0)
    m[0, 2] += w / 2 - big / 2
    m[1, 2] += h / 2 - big / 2 + offset
    strip = cv2.warpAffine(canvas, m, (w, h), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR).astype(np.float32)[..., None] / 255.0
    opacity = rng.uniform(0.85, 1.0)
    out = img.astype(np.float32) * (1 - alpha * opacity) + strip.astype(np.float32) * alpha * opacity
    return np.clip(out, 0, 255).astype(np.uint8)


OFF_DOMAIN_KINDS: tuple[str, ...] = (
    "scalp",
    "black",
    "white",
    "grey",
    "flat_colour",
    "noise",
    "checker",
    "stripes",
    "gradient",
    "shapes",
    "landscape",
)


def off_domain_frame(
    rng: np.random.Generator,
    size: tuple[int, int] = (512, 512),
    kind: str | None = None,
    base: np.ndarray | None = None,
) -> np.ndarray:
    """A frame that is not a dermoscopic close-up: dense-hair scalp, blank frames, non-skin patterns.

    ``kind`` is one of :data:`OFF_DOMAIN_KINDS` (random if None). ``base`` (a clean image) gives
    the scalp its skin colour.
    """
    h, w = size
    kind = kind or OFF_DOMAIN_KINDS[int(rng.integers(len(OFF_DOMAIN_KINDS)))]
    jitter = rng.normal(0, 1.5, (h, w, 1))
    if kind == "scalp":
        skin = (
            np.median(base.reshape(-1, 3), 0)
            if base is not None
            else np.array([rng.uniform(170, 230), rng.uniform(120, 170), rng.uniform(100, 150)])
        )
        img = np.empty((h, w, 3), np.uint8)
        img[:] = np.clip(skin * rng.uniform(0.8, 1.0), 0, 255).astype(np.uint8)
        return add_hair(img, rng, (500, 800), (0.003, 0.007), flow=rng.uniform(0, np.pi), length=(0.3, 0.8))
    if kind in ("black", "white", "grey", "flat_colour"):
        value = {
            "black": [rng.uniform(0, 12)] * 3,
            "white": [rng.uniform(243, 255)] * 3,
            "grey": [rng.uniform(90, 170)] * 3,
            "flat_colour": rng.uniform(0, 255, 3),
        }[kind]
        return np.clip(np.asarray(value)[None, None, :] + jitter, 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    if kind == "noise":
        img = rng.uniform(0, 255, (h, w, 3))
        if rng.random() < 0.5:
            img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), rng.uniform(0.5, 2.0))
        return np.clip(img, 0, 255).astype(np.uint8)
    if kind == "checker":
        cell = int(rng.integers(8, 64))
        t = (((xx // cell) + (yy // cell)) % 2)[..., None]
    elif kind == "stripes":
        period = rng.uniform(10, 80)
        a = rng.uniform(0, np.pi)
        t = (0.5 + 0.5 * np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / period))[..., None]
    elif kind == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        t = (xx * np.cos(a) + yy * np.sin(a)) / (w + h)
        t = ((t - t.min()) / (np.ptp(t) + 1e-6))[..., None]
        c1, c2 = (
            np.array([20, 80, 200]) * rng.uniform(0.6, 1.2),
            np.array([40, 200, 80]) * rng.uniform(0.6, 1.2),
        )
    elif kind == "shapes":
        img = np.empty((h, w, 3), np.uint8)
        img[:] = rng.uniform(0, 255, 3).astype(np.uint8)
        for _ in range(int(rng.integers(6, 20))):
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                cv2.circle(
                    img,
                    (int(rng.integers(w)), int(rng.integers(h))),
                    int(rng.integers(10, w // 4)),
                    colour,
                    -1,
                )
            else:
                p = rng.integers(0, max(h, w), 4)
                cv2.rectangle(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), colour, -1)
        return img
    elif kind == "landscape":
        horizon = rng.uniform(0.3, 0.7) * h
        sky = np.array([90, 150, 230]) * rng.uniform(0.7, 1.1)
        grass = np.array([50, 140, 50]) * rng.uniform(0.6, 1.2)
        t = (yy > horizon + 10 * np.sin(xx / rng.uniform(20, 60)))[..., None].astype(np.float32)
        img = (1 - t) * sky + t * grass + rng.normal(0, 12, (h, w, 3)) * t
        return np.clip(img + jitter, 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"unknown off-domain kind {kind!r}; expected one of {OFF_DOMAIN_KINDS}")
    img = (1 - t) * c1 + t * c2
    return np.clip(img + jitter, 0, 255).astype(np.uint8)


COPY_TRANSFORMS: tuple[str, ...] = ("exact", "jpeg", "resize", "shift", "crop", "brightness", "combo")


def near_copy(img: np.ndarray, rng: np.random.Generator, transform: str | None = None) -> np.ndarray:
    """An exact or near copy: re-compressed, resized, shifted, cropped, brightness-changed, or a mix."""
    transform = transform or COPY_TRANSFORMS[int(rng.integers(len(COPY_TRANSFORMS)))]
    h, w = img.shape[:2]
    if transform == "exact":
        return img.copy()
    if transform == "jpeg":
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 92))])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
    if transform == "resize":
        f = rng.uniform(0.35, 0.9)
        small = cv2.resize(img, (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)
        return small if rng.random() < 0.5 else cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if transform == "shift":
        dx, dy = (rng.uniform(-0.03, 0.03, 2) * (w, h)).astype(int)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    if transform == "crop":
        c = rng.uniform(0.02, 0.06)
        x0, y0 = int(rng.uniform(0, c) * w), int(rng.uniform(0, c) * h)
        x1, y1 = w - int(rng.uniform(0, c) * w), h - int(rng.uniform(0, c) * h)
        return cv2.resize(img[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_AREA)
    if transform == "brightness":
        return np.clip(img.astype(np.float32) * rng.uniform(0.9, 1.1) + rng.uniform(-8, 8), 0, 255).astype(
            np.uint8
        )
    if transform == "combo":
        out = near_copy(img, rng, "crop")
        out = near_copy(out, rng, "brightness")
        return near_copy(out, rng, "jpeg")
    raise ValueError(f"unknown copy transform {transform!r}; expected one of {COPY_TRANSFORMS}")


_HEAVY_FNS: dict[str, Callable[..., np.ndarray]] = {
    "ink": add_ink_strokes,
    "blur": apply_blur,
    "washout": apply_washout,
    "tint": apply_tint,
    "overexposed": apply_clipped,
    "underexposed": apply_clipped,
    "hair": add_hair,
    "ruler": add_ruler,
}
_MILD_FNS: dict[str, Callable[..., np.ndarray]] = {**_HEAVY_FNS, "ink": add_ink_dots, "ruler": add_scale_bar}


def make_noisy(img: np.ndarray, category: str, severity: str = "heavy", seed: object = 0) -> np.ndarray:
    """Apply one noise ``category`` (see :data:`CATEGORIES`) at ``severity`` 'mild' or 'heavy'.

    Deterministic in (category, severity, seed). 'off_domain' ignores severity and uses ``img`` only
    for its size and skin colour.
    """
    rng = rng_for(category, severity, seed)
    if category == "off_domain":
        return off_domain_frame(rng, img.shape[:2], base=img)
    if severity not in ("mild", "heavy"):
        raise ValueError(f"severity must be 'mild' or 'heavy', got {severity!r}")
    table, fns = (MILD, _MILD_FNS) if severity == "mild" else (HEAVY, _HEAVY_FNS)
    if category not in table:
        raise ValueError(f"unknown noise category {category!r}; expected one of {CATEGORIES}")
    return fns[category](img, rng, **table[category])
