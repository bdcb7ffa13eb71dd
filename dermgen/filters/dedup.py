"""Near-duplicates within a run and memorised copies of reference (fine-tuning) images.

A copy may be resized (0.5x-2x), cropped (up to ~10% per side), colour-shifted, re-encoded, and turned
by any of the eight flips / rotations by 90 degrees (the dihedral group D4: lesions have no canonical
orientation and training augments with flips). A query is compared with an index in four steps:

1. shortlist (:data:`RERANK` per query): the :data:`POOL` entries closest by a D4-invariant ring
   descriptor of their central 90% (mean L, a, b and gradient energy over concentric rings: one product
   over the index), scored by the ring descriptors of three windows (full frame, central 90% and 80%,
   best over the 3x3 pairs so that crops and zooms still meet) plus a 12x12 grey thumbnail compared in
   the query's eight orientations;
2. pre-scan: each shortlisted entry's 32 px texture template (difference of Gaussians) is matched at
   9x9 positions in the query's band in each of the eight orientations, all in one matrix product; it
   ranks the entries (a copied one comes first for ~97% of copies) and the orientations (the true one is
   always within :data:`PRE_NEAR` of the best). It looks for the entry inside the query (the query a
   crop of it: a memorised copy of a reference); a two-way index (``both_ways``: a run's near-duplicates,
   where either image may be the crop of the other) also ranks the entries by the query's band zoomed
   by :data:`PRE_WIDE` (an entry cropped from the query is magnified in it);
3. texture: the best :data:`TEXTURE_RANK` entries (in a two-way index, by each ranking) are matched at
   64 px in the orientations the pre-scan left (normalised template matching over a few zooms: the
   query's centre in the entry zoomed, and in a two-way index also the entry's centre in the query
   zoomed), which also places them (zoom and shift); only the best :data:`MAX_CANDIDATES`
   entries with a match >= :data:`COARSE_GATE` go on to step 4 (a match >= :data:`EARLY` at once; if
   that one is no copy, look-alikes crowd the pre-scan and twice as many entries are matched);
4. verification, in the best orientation (and the second best if it lines up too), from each placement
   (the better first): ECC (affine) on the 64 px band, which must line up to :data:`PLACED_GATE`, then
   the correlation of the finer band at 128 px (difference of Gaussians, sigma 0.7 and 2), 0..1; below
   :data:`VERIFIED`, after ECC at 128 px, and also of that band blurred (a copy downscaled to ~100 px
   lacks the finest texture), less a small margin.

A non-square image is seen two ways: its frame squashed to a square, and its central square. An index
stores both rows for such an entry (a model fine-tuned on centre crops memorises the central square); a
non-square query not verified squashed is matched again by its central square (a copy cropped unevenly,
10% off two opposite sides, is squashed into an uneven zoom that the texture match does not follow, while
its central square is an even zoom of the original).

Generated moles look alike at low resolution (the ring descriptor alone puts the true original first
for ~88% of copies among 120 kept samples), but their fine texture differs: after alignment, distinct
kept samples score <= 0.88 while re-compressed, resized, cropped, turned or colour-shifted copies
mostly score >= 0.94 (``benchmarks/memorisation_copies.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from dermgen.filters.base import ImageView, Scorer

__all__ = [
    "IMAGE_EXTENSIONS",
    "DuplicateScorer",
    "Fingerprint",
    "FingerprintIndex",
    "Match",
    "MemorisationScorer",
    "copy_similarity",
    "fingerprint",
    "iter_image_files",
    "orient",
    "phash",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
SIDE = 128  # verification resolution
MARGIN = 12  # px left out around the template (tolerates ~9% shifts and crops)
SCALES = (0.96, 1.0, 1.04, 1.08, 1.12)  # zoom of the other image tried by template matching
MAX_CANDIDATES = 1  # entries verified per query: the best texture match (the copied entry ranked first
# by texture for 958 / 958 real-sample copies it reached; a second verification found no copy more on
# those or on 300 procedural copies at 25,000 entries, and cost new images 0.6 ms at p95)
RERANK = 48  # entries pre-scanned at 32 px in all orientations, best shortlist score first (the copied
# entry: ranked up to 34th by the shortlist of 3,840 kept-sample copies, never below 4th by the pre-scan)
TEXTURE_RANK = 4  # of those, the best by the pre-scan are matched at 64 px, twice as many once a look-alike
# failed verification (the copied one: first in 98%, among the best four for 3,840 / 3,840 copies of the
# kept samples, 5th once in 960 more, amid four look-alikes within 0.012 at 32 px; an uncropped original
# of an indexed crop can pre-scan well below a look-alike, so no cut by pre-scan score: a two-way index
# ranks the entries a second time for those, see PRE_WIDE)
COARSE_GATE = 0.62  # 64 px texture match needed for a verification (copies >= 0.7, most distinct <= 0.6)
EARLY = 0.75  # a texture match this strong is verified before the rest of the shortlist is re-ranked
# (the copied entry's: >= 0.78 for 99% of copies)
ECC_ITERATIONS = 5  # from the 64 px placement (10 found no more of the 960 copies, at twice the cost)
LOW_RES_SIGMA = 1.2  # extra blur of the fine band for small copies (0: off)
LOW_RES_MARGIN = 0.03  # the blurred comparison is less specific: it counts this much less
VERIFIED = 0.94  # a verification at or above this is a copy for sure: no need to try further candidates
SQUARE_ASPECT = 1.05  # an image with a longer side beyond this x its shorter one is also seen by its
# central square (see :class:`Fingerprint`; copies of square originals within this aspect match squashed)

LAB_SIDE = 64  # the Lab copy the ring descriptors are computed on
RINGS = 8  # ring descriptor: RINGS rings + the corners, 4 features each
RING_WINDOWS = (1.0, 0.9, 0.8)  # central windows the ring descriptor is computed on
RING_DIM = 4 * (RINGS + 1)
PROXY_WINDOW = 1  # in an index larger than POOL, the shortlist is drawn from the entries closest by
POOL = 512  # this window's ring alone (the copied entry: within the best 512 as often as the best 1000-2000)
THUMB = 12  # side of the shortlist thumbnail, compared in the eight orientations of the query
THUMB_WINDOW = 0.9  # an entry's thumbnail: its central 90%
THUMB_SIGMA = 0.5
THUMB_BASE = 40  # the thumbnails are cut from one copy this size (windows of 40, 36 and 32 px)
RING_WEIGHT = 3.0  # shortlist score: thumbnail cosine + RING_WEIGHT x ring cosine (at 25,000 entries the
# copied one among the best 24 for 84 / 86 procedural and 238 / 239 kept-sample copies, ring alone 75 and 235)


def orient(array: np.ndarray, k: int) -> np.ndarray:
    """Element ``k`` (0..7) of D4 on the first two axes: rotated by k*90 degrees, mirrored first if k >= 4."""
    if k >= 4:
        array = array[:, ::-1]
    return np.ascontiguousarray(np.rot90(array, k % 4))


def unorient(array: np.ndarray, k: int) -> np.ndarray:
    """The inverse of :func:`orient`: ``unorient(orient(a, k), k) == a``."""
    array = np.rot90(array, -(k % 4))
    if k >= 4:
        array = array[:, ::-1]
    return np.ascontiguousarray(array)


@dataclass(frozen=True)
class Fingerprint:
    """What is kept of an image for copy detection (about 17 KB).

    ``rings``: (3, 36) float32, unit rows: the D4-invariant shortlist descriptors of the full frame and
    its central 90% and 80%; ``gray``: 128x128 uint8, for the texture re-ranking and the verification;
    ``thumb``: (144,) float32, unit: the upright 12x12 thumbnail of the central 90% (see :func:`_thumb`).
    ``square``: for an image whose sides differ by more than :data:`SQUARE_ASPECT`, the fingerprint of its
    central square (an index stores it as a second row of the entry; a query is matched by it too): the
    frame is squashed to a square, so a copy cropped unevenly (10% off two opposite sides only: aspect
    1.25) is a zoom by different amounts along x and y of its original, beyond what the texture match
    tolerates, while its central square is an even zoom (<= 1.25) and a shift.
    """

    rings: np.ndarray
    gray: np.ndarray
    thumb: np.ndarray
    square: Fingerprint | None = None


@dataclass(frozen=True)
class Match:
    """The closest indexed image: copy similarity 0..1, its label and position, the D4 orientation."""

    similarity: float
    label: str | None
    index: int | None = None
    orientation: int = 0
    shortlist_score: float = 0.0


def _unit(v: np.ndarray) -> np.ndarray:
    v = v.ravel().astype(np.float32)
    v = v - v.mean()
    return v / (float(np.linalg.norm(v)) + 1e-6)


def _ring_ids(side: int) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    r = np.sqrt((xx - side / 2) ** 2 + (yy - side / 2) ** 2) / (side / 2)
    return np.minimum((r * RINGS).astype(np.int64), RINGS).ravel()


_RING_IDS = _ring_ids(LAB_SIDE)
_RING_COUNTS = np.bincount(_RING_IDS, minlength=RINGS + 1).astype(np.float32)


def _window(lab: np.ndarray, x0: float, y0: float, side: float, n: int) -> np.ndarray:
    """The square (x0, y0, side) of ``lab`` (frame units) resampled to n x n, pre-blurred to avoid aliasing."""
    size = lab.shape[0]
    scale = n / (side * size)
    m = np.float32([[scale, 0, -scale * x0 * size], [0, scale, -scale * y0 * size]])
    src = cv2.GaussianBlur(lab, (0, 0), max(0.5, 0.5 / scale)) if scale < 1 else lab
    return cv2.warpAffine(src, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _rings_of(lab: np.ndarray) -> np.ndarray:
    """Mean L, a, b (each zero-mean) and relative gradient energy per ring of a LAB_SIDE square."""
    lab = cv2.GaussianBlur(lab, (0, 0), 1.0)
    lum = lab[..., 0]
    gx = cv2.Sobel(lum, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(lum, cv2.CV_32F, 0, 1)
    grad = np.sqrt(gx * gx + gy * gy)
    feats = []
    for ch in (lum - lum.mean(), lab[..., 1] - lab[..., 1].mean(), lab[..., 2] - lab[..., 2].mean()):
        feats.append(np.bincount(_RING_IDS, ch.ravel(), RINGS + 1) / _RING_COUNTS)
    g = np.bincount(_RING_IDS, grad.ravel(), RINGS + 1) / _RING_COUNTS
    feats.append(g / (float(g.mean()) + 1e-6) * 10)
    return np.concatenate(feats)


def _lab_square(view: ImageView) -> np.ndarray:
    rgb = cv2.resize(view.small_rgb, (LAB_SIDE, LAB_SIDE), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 1:] -= 128.0
    return lab


def fingerprint(image: np.ndarray | ImageView) -> Fingerprint:
    """The fingerprint of an image (array or view); cached on a view."""
    view = image if isinstance(image, ImageView) else ImageView(image)
    if "fingerprint" in view.cache:
        return view.cache["fingerprint"]
    lab = _lab_square(view)
    rings = np.stack(
        [_unit(_rings_of(_window(lab, (1 - s) / 2, (1 - s) / 2, s, LAB_SIDE))) for s in RING_WINDOWS]
    )
    gray = view.small_gray
    if gray.shape != (SIDE, SIDE):
        gray = cv2.resize(gray, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    gray = np.ascontiguousarray(gray)
    h, w = view.rgb.shape[:2]
    square = None
    if max(h, w) > SQUARE_ASPECT * min(h, w):
        work = view.work_rgb
        side = min(work.shape[:2])
        y0, x0 = (work.shape[0] - side) // 2, (work.shape[1] - side) // 2
        square = fingerprint(ImageView(work[y0 : y0 + side, x0 : x0 + side]))
    fp = Fingerprint(rings, gray, _thumb(gray), square)
    view.cache["fingerprint"] = fp
    return fp


def _thumbs(gray: np.ndarray, windows: tuple[float, ...]) -> np.ndarray:
    """(len(windows), 144): the central ``windows`` of a SIDE px grey copy as THUMB x THUMB thumbnails,
    slightly blurred (it tolerates the small shifts of a crop), zero-mean and unit-norm, flattened. Made
    from one THUMB_BASE px copy (the windows are whole pixels of it)."""
    base = cv2.resize(gray, (THUMB_BASE, THUMB_BASE), interpolation=cv2.INTER_AREA)
    out = []
    for w in windows:
        m = round(THUMB_BASE * (1 - w) / 2)
        t = cv2.resize(
            base[m : THUMB_BASE - m, m : THUMB_BASE - m], (THUMB, THUMB), interpolation=cv2.INTER_AREA
        )
        out.append(_unit(cv2.GaussianBlur(t.astype(np.float32), (0, 0), THUMB_SIGMA)))
    return np.stack(out)


def _thumb(gray: np.ndarray) -> np.ndarray:
    """An entry's thumbnail: its central :data:`THUMB_WINDOW`, upright."""
    return _thumbs(gray, (THUMB_WINDOW,))[0]


def _query_thumbs(gray: np.ndarray) -> np.ndarray:
    """(24, 144): a query's thumbnails of the three :data:`RING_WINDOWS`, each in the eight orientations
    (an entry's is the upright one of the central 90%: a copy cropped by up to ~10% a side, turned any
    way, meets it in one of these)."""
    flat = _thumbs(gray, RING_WINDOWS)  # (3, 144)
    return flat.take(_THUMB_TURNS.ravel(), axis=1).reshape(len(RING_WINDOWS) * 8, -1)


def phash(image: np.ndarray | ImageView) -> int:
    """64-bit DCT perceptual hash (for reporting and quick exact-copy checks; not used for decisions)."""
    view = image if isinstance(image, ImageView) else ImageView(image)
    g = cv2.resize(view.small_gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    d = cv2.dct(g)[:8, :8].ravel()
    bits = d > np.median(d[1:])
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def _bands(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g = gray.astype(np.float32)
    coarse = cv2.GaussianBlur(g, (0, 0), 1.0) - cv2.GaussianBlur(g, (0, 0), 3.0)
    return coarse, _fine_band(g)


def _fine_band(gray: np.ndarray) -> np.ndarray:
    """The band verification correlates (difference of Gaussians, sigma 0.7 and 2, at SIDE px)."""
    g = gray.astype(np.float32)
    return cv2.GaussianBlur(g, (0, 0), 0.7) - cv2.GaussianBlur(g, (0, 0), 2.0)


def _subpixel(r: np.ndarray, x: int, y: int) -> tuple[float, float]:
    def vertex(a: float, b: float, c: float) -> float:
        d = a - 2 * b + c
        return 0.0 if abs(d) < 1e-9 else 0.5 * (a - c) / d

    dx = vertex(r[y, x - 1], r[y, x], r[y, x + 1]) if 0 < x < r.shape[1] - 1 else 0.0
    dy = vertex(r[y - 1, x], r[y, x], r[y + 1, x]) if 0 < y < r.shape[0] - 1 else 0.0
    return x + dx, y + dy


_MASK = np.zeros((SIDE, SIDE), np.uint8)
_MASK[MARGIN:-MARGIN, MARGIN:-MARGIN] = 1


@dataclass(frozen=True)
class _Alignment:
    """``b``'s grid mapped onto ``a``'s by template matching of the coarse band (``score``: its match)."""

    score: float
    warp: np.ndarray
    a_gray: np.ndarray
    b_gray: np.ndarray
    a_fine: np.ndarray
    b_fine: np.ndarray


def _align(a_gray: np.ndarray, b_gray: np.ndarray) -> _Alignment:
    """Where ``a``'s centre lies in ``b`` (over the zooms of :data:`SCALES`): ``a`` may be a crop of ``b``."""
    a_coarse, a_fine = _bands(a_gray)
    b_coarse, b_fine = _bands(b_gray)
    template = a_coarse[MARGIN:-MARGIN, MARGIN:-MARGIN]
    best = (-2.0, 1.0, 0.0, 0.0)
    for s in SCALES:
        n = round(SIDE * s)
        scaled = b_coarse if n == SIDE else cv2.resize(b_coarse, (n, n), interpolation=cv2.INTER_LINEAR)
        r = cv2.matchTemplate(scaled, template, cv2.TM_CCOEFF_NORMED)
        _, value, _, loc = cv2.minMaxLoc(r)
        if value > best[0]:
            x, y = _subpixel(r, *loc)
            best = (value, n / SIDE, x, y)
    value, s, x, y = best
    # affine map from a's pixel grid to b's: b = (a + (x - MARGIN, y - MARGIN)) / s
    warp = np.float32([[1 / s, 0, (x - MARGIN) / s], [0, 1 / s, (y - MARGIN) / s]])
    return _Alignment(float(value), warp, a_gray, b_gray, a_fine, b_fine)


def _ecc(
    template: np.ndarray, image: np.ndarray, warp: np.ndarray, iterations: int, mask: np.ndarray
) -> tuple[float, np.ndarray]:
    """(correlation after alignment, ``warp`` (template grid -> image grid) refined by ECC, affine);
    (-1, ``warp`` unchanged) when ECC fails (no texture to align on, or it diverged)."""
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-5)
    try:
        rho, out = cv2.findTransformECC(template, image, warp.copy(), cv2.MOTION_AFFINE, criteria, mask, 1)
        return float(rho), out
    except cv2.error:
        return -1.0, warp


def _warped(image: np.ndarray, warp: np.ndarray) -> np.ndarray:
    """``image`` resampled onto the grid ``warp`` maps from (NaN outside it)."""
    return cv2.warpAffine(
        image, warp, (SIDE, SIDE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=np.nan
    )


def _refined_similarity(al: _Alignment) -> float:
    """The fine-band correlation after ECC refinement of an alignment, 0..1."""
    a_fine, b_fine, warp = al.a_fine, al.b_fine, al.warp
    warp = _ecc(a_fine, b_fine, warp, ECC_ITERATIONS, _MASK)[1]
    corr = _correlation(a_fine, _warped(b_fine, warp))
    if corr is None:  # two flat frames: identical if their grey levels match
        return 1.0 if abs(float(al.a_gray.mean()) - float(al.b_gray.mean())) < 2 else 0.0
    if corr < VERIFIED and LOW_RES_SIGMA:
        # one image may be a small copy (~100 px) without the finest texture: compare both at its resolution
        # (two different smooth, blurry moles correlate up to ~0.91 there, hence the margin)
        a_low = cv2.GaussianBlur(a_fine, (0, 0), LOW_RES_SIGMA)
        b_low = _warped(cv2.GaussianBlur(b_fine, (0, 0), LOW_RES_SIGMA), warp)
        corr = max(corr, (_correlation(a_low, b_low) or 0.0) - LOW_RES_MARGIN)
    return float(np.clip(corr, 0.0, 1.0))


def _gray_similarity(a_gray: np.ndarray, b_gray: np.ndarray) -> float:
    return _refined_similarity(_align(a_gray, b_gray))


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Correlation of the inner parts (b may hold NaN outside the overlap); None for two flat frames."""
    va = a[MARGIN:-MARGIN, MARGIN:-MARGIN].ravel()
    vb = b[MARGIN:-MARGIN, MARGIN:-MARGIN].ravel()
    ok = np.isfinite(vb)
    if int(ok.sum()) < 100:
        return 0.0
    va = va[ok] - va[ok].mean()
    vb = vb[ok] - vb[ok].mean()
    denom = float(np.linalg.norm(va) * np.linalg.norm(vb))
    if denom < 1e-6:
        return None
    return float(va @ vb / denom)


COARSE = 64  # texture match resolution
COARSE_MARGIN = 7
COARSE_SCALES = (1.0, 1.1, 1.2)
COARSE_MID = 1.1  # the zoom every orientation is matched at; the others only for the best one
SWEEP_GATE = 0.55  # the larger zooms are tried when the middle one matches this well (copies: >= 0.58 there)
FIRST_SCALES = (1.0, 1.1, 1.2, 1.3)  # the pre-scan's best entry: every zoom, up to 1.3 (a copy cropped ~10%
# on every side needs ~1.25 and can match as little as 0.34 at the middle zoom; ~87% of new images reach
# SWEEP_GATE there and pay the sweep anyway)
COARSE_ECC_ITERATIONS = 3  # ECC at 64 px from a texture placement, before the verification's at SIDE px
WAY_GATE = 0.52  # a way round placed below this is not aligned (the other one is, or the orientation fails)
PLACED_GATE = 0.8  # 64 px correlation after that ECC needed for the SIDE px refinement (copies: >= 0.947 on
# 1,050 copies; different look-alike moles mostly below: procedural 204 / 206 refinements saved, kept samples 162 / 434)
PRE = 32  # orientation pre-scan resolution
PRE_TEMPLATE = 24  # side of an entry's pre-scan template (searched at 9x9 positions in the query's band)
PRE_SCALE = 1.1
PRE_WIDE = 1.25  # a two-way index's second pre-scan: the query's band zoomed by this (an entry cropped up
# to 10% per side from the query is magnified 1-1.25x; the first pre-scan ranked such entries 2nd-35th,
# below look-alikes, and 45-55 of 120 originals of indexed hard copies were found; 1,200 / 1,200 on ten
# draws with the wide ranking's best TEXTURE_RANK matched too)
PRE_NEAR = 0.045  # orientations this close to the pre-scan's best go on to the 64 px match (on 480 copies
# the true one was always within 0.031; smooth, symmetric moles leave several close)


# (8, 144): the pixels of a flattened thumbnail turned by orientation k (see :func:`orient`)
_THUMB_TURNS = np.stack([orient(np.arange(THUMB * THUMB).reshape(THUMB, THUMB), k).ravel() for k in range(8)])
# (8, 576): pixel k of a flattened pre-scan template turned back by orientation k (see :func:`unorient`)
_PRE_TURNS = np.stack(
    [
        unorient(np.arange(PRE_TEMPLATE * PRE_TEMPLATE).reshape(PRE_TEMPLATE, PRE_TEMPLATE), k).ravel()
        for k in range(8)
    ]
)
_COARSE_MASK = np.zeros((COARSE, COARSE), np.uint8)
_COARSE_MASK[COARSE_MARGIN:-COARSE_MARGIN, COARSE_MARGIN:-COARSE_MARGIN] = 1


def _coarse_band(gray: np.ndarray, side: int = COARSE) -> np.ndarray:
    g = cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    return cv2.GaussianBlur(g, (0, 0), 0.7) - cv2.GaussianBlur(g, (0, 0), 2.0)


def _pre_template(gray: np.ndarray) -> np.ndarray:
    """An entry's side of the pre-scan (float16, ~1.1 KB): the centre of its 32 px band zoomed by
    PRE_SCALE, zero-mean and unit-norm, flattened."""
    side = round(PRE * PRE_SCALE)
    band = cv2.resize(_coarse_band(gray, PRE), (side, side), interpolation=cv2.INTER_LINEAR)
    m = (side - PRE_TEMPLATE) // 2
    return _unit(band[m : m + PRE_TEMPLATE, m : m + PRE_TEMPLATE]).astype(np.float16)


class _Probe:
    """A query's texture bands, made once per lookup and matched against many entries: a 32 px pre-scan
    ranks the entries and orientations (the true one is among its best two for ~99% of copies), then the
    64 px match (:meth:`texture`) runs in those within :data:`PRE_NEAR` of the best only. A ``wide``
    probe also pre-scans its band zoomed by :data:`PRE_WIDE` (entries cropped from the query)."""

    def __init__(self, gray: np.ndarray, wide: bool = False) -> None:
        self.gray = gray
        self._band = _coarse_band(gray)
        self._turned: dict[int, np.ndarray] = {}  # the 64 px band in the orientations matched so far
        # upright only: turning an entry's template back is the same as turning the query (the 9x9
        # positions map onto themselves), and 8x fewer query patches to normalise
        band = _coarse_band(gray, PRE)
        views = [band]
        if wide:  # and the band zoomed by PRE_WIDE, its central PRE px: an entry cropped from the query
            zoomed = cv2.resize(band, (round(PRE * PRE_WIDE),) * 2, interpolation=cv2.INTER_LINEAR)
            c = (len(zoomed) - PRE) // 2
            views.append(zoomed[c : c + PRE, c : c + PRE])
        self.wide = wide
        patches = np.concatenate(
            [
                np.lib.stride_tricks.sliding_window_view(v, (PRE_TEMPLATE, PRE_TEMPLATE)).reshape(
                    -1, PRE_TEMPLATE * PRE_TEMPLATE
                )
                for v in views
            ]
        )
        patches = patches - patches.mean(axis=1, keepdims=True)
        patches /= np.sqrt(np.einsum("ij,ij->i", patches, patches))[:, None] + 1e-6
        self.patches = patches
        self._zoomed: dict[tuple[int, float], np.ndarray] = {}
        self._fine: dict[int, np.ndarray] = {}

    def turned(self, k: int) -> np.ndarray:
        if k not in self._turned:
            self._turned[k] = orient(self._band, k)
        return self._turned[k]

    def fine(self, k: int) -> np.ndarray:
        """The query's SIDE px fine band turned by ``k`` (for the verification)."""
        if k not in self._fine:
            if 0 not in self._fine:
                self._fine[0] = _fine_band(self.gray)
            self._fine[k] = orient(self._fine[0], k)
        return self._fine[k]

    def pre_scan(self, templates: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """(len(templates), 8): for each entry template (see :func:`_pre_template`) and orientation of the
        query, the best normalised match over its positions in the query's 32 px band (one product); and
        the same over the band zoomed by :data:`PRE_WIDE` for a ``wide`` probe (None otherwise)."""
        n = len(templates)
        if not n:
            return np.zeros((0, 8), np.float32), np.zeros((0, 8), np.float32) if self.wide else None
        t = np.stack(templates, axis=1).astype(np.float32)  # (576, n)
        turned = t.take(_PRE_TURNS.ravel(), axis=0).reshape(8, PRE_TEMPLATE * PRE_TEMPLATE, -1)
        scores = np.matmul(self.patches, turned)  # (8, positions, n): each template turned back 8 ways
        if not self.wide:
            return scores.max(axis=1).T, None
        half = scores.shape[1] // 2
        return scores[:, :half].max(axis=1).T, scores[:, half:].max(axis=1).T

    def _zoom(self, k: int, s: float) -> np.ndarray:
        if (k, s) not in self._zoomed:
            self._zoomed[k, s] = cv2.resize(
                self.turned(k), (round(COARSE * s),) * 2, interpolation=cv2.INTER_LINEAR
            )
        return self._zoomed[k, s]

    def texture(self, b_gray: np.ndarray, orientations: list[int], first: bool = False) -> _Texture:
        """64 px texture match with entry ``b`` in ``orientations``: the query's centre searched in ``b``
        zoomed and, for a ``wide`` probe, ``b``'s centre in the query zoomed (``b`` a crop of it), the middle of
        :data:`COARSE_SCALES` for each orientation, the other zooms for the best one (the larger ones when
        it reaches :data:`SWEEP_GATE`); the pre-scan's best entry (``first``) at every zoom of
        :data:`FIRST_SCALES`."""
        m = COARSE_MARGIN
        b = _coarse_band(b_gray)
        b_centre = b[m:-m, m:-m]
        b_scaled: dict[float, np.ndarray] = {1.0: b}
        out = _Texture(np.full(8, -1.0, np.float32), b_gray, b)

        def match(k: int, s: float) -> float:
            if s not in b_scaled:
                b_scaled[s] = cv2.resize(b, (round(COARSE * s),) * 2, interpolation=cv2.INTER_LINEAR)
            forward = out.place(k, False, s, b_scaled[s], self.turned(k)[m:-m, m:-m])
            if s <= 1.0 or not self.wide:  # one way: the query is the crop, searched in the entry
                return forward
            return max(forward, out.place(k, True, s, self._zoom(k, s), b_centre))

        mid = COARSE_MID
        for k in orientations:
            out.scores[k] = match(k, mid)
        k = int(np.argmax(out.scores))
        # unzoomed always (an exact copy of a noise-like frame matches at no other zoom), larger zooms when
        # the middle one lines up a little, or for the pre-scan's best entry
        scales = FIRST_SCALES if first else COARSE_SCALES
        zooms = [s for s in scales if s != mid and (first or s <= 1.0 or out.scores[k] >= SWEEP_GATE)]
        out.scores[k] = max([float(out.scores[k])] + [match(k, s) for s in zooms])
        return out


@dataclass
class _Texture:
    """A query's 64 px texture match with one entry: ``scores`` per orientation (-1 where not tried) and,
    per orientation tried, the best placement each way round tried (the query's centre in the entry, and,
    two-way, the entry's centre in the query) as (score, scale, x, y) at 64 px: the start of the
    verification."""

    scores: np.ndarray
    b_gray: np.ndarray
    b_band: np.ndarray
    ways: dict[tuple[int, bool], tuple[float, float, float, float]] = field(default_factory=dict)

    def place(self, k: int, reverse: bool, s: float, image: np.ndarray, template: np.ndarray) -> float:
        r = cv2.matchTemplate(image, template, cv2.TM_CCOEFF_NORMED)
        _, value, _, loc = cv2.minMaxLoc(r)
        if value > self.ways.get((k, reverse), (-2.0,))[0]:
            self.ways[k, reverse] = (float(value), s, *_subpixel(r, *loc))
        return float(value)

    @cached_property
    def b_fine(self) -> np.ndarray:
        """The entry's SIDE px fine band (made once, for whichever orientations get verified)."""
        return _fine_band(self.b_gray)

    def order(self) -> list[int]:
        """The orientations to verify: the best, and the second when it passes :data:`COARSE_GATE` too."""
        first, second = (int(k) for k in np.argsort(-self.scores)[:2])
        return [first, second] if self.scores[second] >= COARSE_GATE else [first]

    def similarity(self, probe: _Probe, k: int) -> float:
        """The verification in orientation ``k`` (see :func:`_refined_similarity`), started from the
        placements found here instead of a new search at SIDE px: each way round placed at least
        :data:`WAY_GATE` (the better-placed first) is aligned by ECC at 64 px; one that lines up there
        (>= :data:`PLACED_GATE`) and already correlates >= :data:`VERIFIED` at SIDE px is a copy, the
        others are refined at SIDE px, the best-aligned first."""
        turned = probe.turned(k)
        a_gray = orient(probe.gray, k)
        placed = []
        ways = sorted(((v, rev) for (k_, rev), v in self.ways.items() if k_ == k), key=lambda t: -t[0][0])
        for (placement, s, x, y), reverse in ways:
            if placement < WAY_GATE:
                continue
            template, image = (self.b_band, turned) if reverse else (turned, self.b_band)
            rho, warp = _ecc(template, image, _placement_warp(s, x, y), COARSE_ECC_ITERATIONS, _COARSE_MASK)
            if rho == -1.0:  # ECC failed (no texture to align on): the 128 px check decides
                rho = placement
            elif rho < PLACED_GATE:
                continue
            a_fine, b_fine, warp = probe.fine(k), self.b_fine, _upscaled(warp)
            al = (
                _Alignment(rho, warp, self.b_gray, a_gray, b_fine, a_fine)
                if reverse
                else _Alignment(rho, warp, a_gray, self.b_gray, a_fine, b_fine)
            )
            corr = _correlation(al.a_fine, _warped(al.b_fine, warp))
            if corr is not None and corr >= VERIFIED:  # refining only raises it: a copy already
                return float(min(corr, 1.0))
            placed.append(al)
        best = 0.0
        for al in sorted(placed, key=lambda al: -al.score):
            best = max(best, _refined_similarity(al))
            if best >= VERIFIED:
                break
        return best


def _placement_warp(s: float, x: float, y: float) -> np.ndarray:
    """The affine map, at 64 px, from a template image's grid to the searched image's, for a template
    (margin :data:`COARSE_MARGIN`) found at (x, y) in the searched image zoomed by ``s`` (pixel centres
    at +0.5)."""
    m = COARSE_MARGIN
    return np.float32([[1 / s, 0, (0.5 + x - m) / s - 0.5], [0, 1 / s, (0.5 + y - m) / s - 0.5]])


def _upscaled(warp: np.ndarray) -> np.ndarray:
    """A 64 px affine map (pixel indices) as the same map at SIDE px."""
    r = SIDE / COARSE
    out = warp.copy()
    out[:, 2] = r * warp[:, 2] + 0.5 * (r - 1) * (1 - warp[:, :2].sum(axis=1))
    return out


def _near_best(pre: np.ndarray) -> list[int]:
    """The orientations worth a 64 px match: the pre-scan's best and those within PRE_NEAR of it."""
    order = np.argsort(-pre)
    return [int(k) for k in order if pre[k] >= pre[order[0]] - PRE_NEAR]


def orientation_scores(a_gray: np.ndarray, b_gray: np.ndarray) -> np.ndarray:
    """(8,) how well ``a`` turned by each orientation lines up with ``b`` at 64 px, for the
    orientations a 32 px pre-scan puts within :data:`PRE_NEAR` of its best (-1 for the others); it picks
    the orientation to verify and gates the verification."""
    return _texture_of(_Probe(a_gray), b_gray).scores


def _texture_of(probe: _Probe, b_gray: np.ndarray) -> _Texture:
    pre, wide = probe.pre_scan([_pre_template(b_gray)])
    return probe.texture(b_gray, _near_best(pre[0] if wide is None else np.maximum(pre[0], wide[0])))


def copy_similarity(
    a: Fingerprint, b: Fingerprint, orientation: int | None = 0, *, both_ways: bool = False
) -> float:
    """How exactly ``a`` turned by ``orientation`` (see :func:`orient`) is a copy of ``b``, 0..1.

    ``orientation=None`` tries all eight: the two that line up best at 64 px are verified (with
    ``both_ways``, as :meth:`FingerprintIndex.match` does: from the 64 px placements). ``a``'s
    centre is searched in ``b`` (``a`` may be a crop of ``b``); ``both_ways`` also searches ``b``'s
    centre in ``a`` (``b`` a crop of ``a``) and returns the better of the two.
    """
    if orientation is None:
        if not both_ways:
            order = np.argsort(-orientation_scores(a.gray, b.gray))[:2]
            return max(copy_similarity(a, b, int(k)) for k in order)
        probe = _Probe(a.gray, wide=True)
        tex = _texture_of(probe, b.gray)
        best = 0.0
        for k in tex.order():
            best = max(best, tex.similarity(probe, k))
            if best >= VERIFIED:
                break
        return best
    a_gray = orient(a.gray, orientation) if orientation else a.gray
    if not both_ways:
        return _gray_similarity(a_gray, b.gray)
    # either image may be the crop of the other: the way round that lines up better is refined first,
    # the other only when the first is not a sure copy (a coarse alignment score does not tell which
    # way is right: a copy's wrong way can line up better before refinement)
    ways = sorted((_align(a_gray, b.gray), _align(b.gray, a_gray)), key=lambda al: -al.score)
    s = _refined_similarity(ways[0])
    if s < VERIFIED:
        s = max(s, _refined_similarity(ways[1]))
    return s


def _as_set(exclude: int | Collection[int] | None) -> set[int]:
    if exclude is None:
        return set()
    if isinstance(exclude, (int, np.integer)):
        return {int(exclude)}
    return {int(i) for i in exclude}


def _best_column(scores: np.ndarray) -> np.ndarray:
    """The row-wise max of a tall (n, few) array, a column at a time (``max(axis=1)`` is ~8x slower)."""
    best = scores[:, 0].copy()
    for j in range(1, scores.shape[1]):
        np.maximum(best, scores[:, j], out=best)
    return best


def _largest(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest of ``values`` (1-D, len > k), in no order. A threshold from every
    16th value leaves ~2k candidates to partition (4x cheaper than partitioning all at 25,000)."""
    step = 16
    sample = values[::step]
    if len(sample) > 2 * k // step:
        threshold = np.partition(sample, len(sample) - 2 * k // step)[len(sample) - 2 * k // step]
        candidates = np.flatnonzero(values >= threshold)
        if len(candidates) >= k:  # then they hold the k largest
            return candidates[np.argpartition(-values[candidates], k - 1)[:k]]
    return np.argpartition(-values, k - 1)[:k]


class FingerprintIndex:
    """A growing set of fingerprints; :meth:`match` finds the best copy among them in any orientation.

    Only the compact parts are stored (rings, thumbnail and grey copy: about 17 KB an image) in arrays
    that :mod:`dermgen.filters.reference_index` saves and loads as they are; an entry's pre-scan template
    (1.1 KB) is made the first time it is shortlisted and kept in memory.

    An entry is one image; a non-square one is stored as two rows, its frame squashed to a square and
    its central square (``Fingerprint.square``): a model fine-tuned on centre crops (``train-lora``)
    memorises the central square, which the squashed frame does not resemble. Entries are numbered
    (``exclude``, :attr:`Match.index`) and labelled per image; ``owners`` maps rows to entries.

    ``both_ways``: an entry may also be a crop of the query (a run's near-duplicates; a reference index
    looks for copies cropped from its entries only): a second pre-scan ranking and the texture match each
    way round, ~3 ms more per lookup.
    """

    def __init__(self, *, both_ways: bool = False) -> None:
        self.both_ways = both_ways
        self._n = 0  # rows
        self._rings = np.zeros((0, len(RING_WINDOWS), RING_DIM), np.float32)
        self._proxy = np.zeros((0, RING_DIM), np.float32)  # the ring of window PROXY_WINDOW, contiguous
        self._thumbs = np.zeros((0, THUMB * THUMB), np.float32)
        self._grays = np.zeros((0, SIDE, SIDE), np.uint8)
        self._owners = np.zeros(0, np.int64)  # row -> entry (non-decreasing)
        self._labels: list[str] = []  # per entry
        self._pre: dict[int, np.ndarray] = {}  # pre-scan templates of the rows shortlisted so far
        self._pre_made: np.ndarray | None = None  # or all of them, made ahead (a cached reference index)

    @classmethod
    def from_arrays(
        cls,
        rings: np.ndarray,
        grays: np.ndarray,
        labels: list[str],
        pre: np.ndarray | None = None,
        thumbs: np.ndarray | None = None,
        owners: np.ndarray | None = None,
        *,
        both_ways: bool = False,
    ) -> FingerprintIndex:
        """An index over stored arrays (e.g. memory-mapped from a cache), one row each; ``labels``: one
        per entry. ``pre``: the rows' pre-scan templates, (n, 576) float16, when they were made ahead;
        ``thumbs``: their thumbnails, (n, 144), made from ``grays`` when not given; ``owners``: the entry
        of each row (non-decreasing, every entry at least once), one row per entry when not given."""
        lengths = {"rings": len(rings), "grays": len(grays)}
        lengths.update(
            {k: len(v) for k, v in (("pre", pre), ("thumbs", thumbs), ("owners", owners)) if v is not None}
        )
        if owners is None:
            lengths["labels"] = len(labels)
        if len(set(lengths.values())) > 1:
            raise ValueError(
                "index arrays disagree in length: " + ", ".join(f"{k} {v}" for k, v in lengths.items())
            )
        owners = np.arange(len(labels), dtype=np.int64) if owners is None else np.asarray(owners, np.int64)
        steps = np.diff(owners, prepend=-1)
        last = owners[-1] if len(owners) else -1
        if last != len(labels) - 1 or len(owners) and (steps.min() < 0 or steps.max() > 1):
            raise ValueError(
                f"owners must number the {len(labels)} labels' rows in order (0, 0, 1, 2, 2, ...), "
                f"got {owners[:8].tolist()}..."
            )
        index = cls(both_ways=both_ways)
        index._rings, index._grays, index._owners = rings, grays, owners
        index._proxy = np.ascontiguousarray(rings[:, PROXY_WINDOW], dtype=np.float32)
        index._thumbs = (
            np.asarray(thumbs, dtype=np.float32)
            if thumbs is not None
            else np.stack([_thumb(g) for g in grays]).astype(np.float32)
            if len(grays)
            else index._thumbs
        )
        index._labels = list(labels)
        index._n = len(owners)
        index._pre_made = pre
        return index

    def arrays(self, pre: bool = False) -> dict[str, np.ndarray]:
        """The stored arrays, one row each (rings, thumbs, grays, owners; with ``pre`` also every row's
        pre-scan template, made now where missing), trimmed to the rows."""
        n = self._n
        out = {
            "rings": self._rings[:n],
            "thumbs": self._thumbs[:n],
            "grays": self._grays[:n],
            "owners": self._owners[:n],
        }
        if pre:
            out["pre"] = (
                np.stack([self._pre_template(i) for i in range(n)])
                if n
                else np.zeros((0, PRE_TEMPLATE * PRE_TEMPLATE), np.float16)
            )
        return out

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def _grow(self, need: int) -> None:
        cap = len(self._rings)
        stored = ("_rings", "_grays", "_proxy", "_thumbs", "_owners")
        if need <= cap and all(getattr(self, name).flags.writeable for name in stored):
            return
        new_cap = max(need, 2 * cap, 64)
        for name in stored:
            old = getattr(self, name)
            arr = np.zeros((new_cap, *old.shape[1:]), old.dtype)
            arr[: self._n] = old[: self._n]
            setattr(self, name, arr)

    def add(self, fp: Fingerprint, label: str = "") -> None:
        """Add an image as the next entry (two rows when it has a central square, see the class)."""
        entry = len(self._labels)
        for part in (fp, fp.square):
            if part is None:
                continue
            self._grow(self._n + 1)
            self._rings[self._n] = part.rings
            self._proxy[self._n] = part.rings[PROXY_WINDOW]
            self._thumbs[self._n] = part.thumb
            self._grays[self._n] = part.gray
            self._owners[self._n] = entry
            self._n += 1
        self._labels.append(label)

    def clear(self) -> None:
        self.__init__()

    def _pre_template(self, i: int) -> np.ndarray:
        """Row ``i``'s pre-scan template, made when first needed and kept (rows never change)."""
        if self._pre_made is not None:
            return self._pre_made[i]
        t = self._pre.get(i)
        if t is None:
            t = self._pre[i] = _pre_template(self._grays[i])
        return t

    def _row(self, i: int) -> Fingerprint:
        return Fingerprint(self._rings[i], self._grays[i], self._thumbs[i])

    def entry(self, i: int) -> Fingerprint:
        """The stored part of entry ``i`` as a fingerprint (with its central square when it has one)."""
        row = int(np.searchsorted(self._owners[: self._n], i))
        if row >= self._n or self._owners[row] != i:
            raise IndexError(f"entry {i} out of range: the index holds {len(self)} entries")
        square = row + 1 < self._n and self._owners[row + 1] == i
        return replace(self._row(row), square=self._row(row + 1) if square else None)

    def shortlist(
        self, fp: Fingerprint, k: int = RERANK, exclude: int | Collection[int] | None = None
    ) -> list[tuple[int, float]]:
        """Up to ``k`` entries by shortlist score, best first, never those in ``exclude`` (one entry or
        several): (entry, score), the score being the thumbnail cosine (best over the query's windows and
        orientations) plus :data:`RING_WEIGHT` times the ring cosine (best over the 3x3 window pairs),
        over 1 + RING_WEIGHT; an entry's best row counts.

        In an index larger than :data:`POOL` only the POOL rows closest by the ring of one window (the
        central 90%) are scored: a fixed cost per lookup besides one product over the index."""
        out: dict[int, float] = {}
        for row, score in self._shortlist_rows(fp, k, exclude):
            out.setdefault(int(self._owners[row]), score)
        return list(out.items())

    def _shortlist_rows(
        self, fp: Fingerprint, k: int, exclude: int | Collection[int] | None
    ) -> list[tuple[int, float]]:
        """:meth:`shortlist` by rows: up to ``k`` (row, score), best first."""
        n = self._n
        skip = _as_set(exclude)
        if n == 0 or len(skip) >= len(self) and all(0 <= i < len(self) for i in skip):
            return []
        rows = None
        if n > POOL:
            rows = _largest(_best_column(self._proxy[:n] @ fp.rings.T), POOL)
        rings = self._rings[:n] if rows is None else self._rings.take(rows, axis=0)
        thumbs = self._thumbs[:n] if rows is None else self._thumbs.take(rows, axis=0)
        ring = _best_column(
            (rings.reshape(len(rings) * len(RING_WINDOWS), -1) @ fp.rings.T).reshape(len(rings), -1)
        )
        score = (_best_column(thumbs @ _query_thumbs(fp.gray).T) + RING_WEIGHT * ring) / (1 + RING_WEIGHT)
        ids = np.arange(n) if rows is None else rows
        if skip:
            skipped = np.isin(self._owners[ids], np.fromiter(skip, np.int64, len(skip)))
            score[skipped] = -np.inf
        top = np.argpartition(-score, k)[:k] if len(ids) > k else np.arange(len(ids))
        top = top[np.argsort(-score[top])]
        return [(int(ids[t]), float(score[t])) for t in top if np.isfinite(score[t])]

    def match(
        self,
        fp: Fingerprint,
        *,
        gate: float = COARSE_GATE,
        exclude: int | Collection[int] | None = None,
    ) -> Match:
        """The best verified copy among the entries; similarity 0 when no entry passes the gates.

        ``gate=-1`` always verifies the best texture match (a nearest entry for reports); ``exclude``
        leaves entries out (an entry against the others; a run's withdrawn or own earlier entries).

        Steps 1-4 of the module docstring: ring shortlist, 32 px pre-scan, 64 px texture match of the
        best entries in their likely orientations, verification of the best :data:`MAX_CANDIDATES`. A
        non-square query not verified as a copy is matched again by its central square (``fp.square``).
        """
        best = self._match(fp, gate, exclude)
        if fp.square is not None and best.similarity < VERIFIED:
            other = self._match(fp.square, gate, exclude)
            if other.similarity > best.similarity or best.label is None:
                best = other
        return best

    def _match(self, fp: Fingerprint, gate: float, exclude: int | Collection[int] | None) -> Match:
        listed = self._shortlist_rows(fp, RERANK, exclude)
        if not listed:  # an empty index (no references, a run's first image): nothing to prepare
            return Match(0.0, None)
        probe = _Probe(fp.gray, wide=self.both_ways)
        pres, wides = probe.pre_scan([self._pre_template(i) for i, _ in listed])
        by_pre = sorted(range(len(listed)), key=lambda j: -float(pres[j].max()))
        # what to match at 64 px, in order, as (rank by the pre-scan or -1, place in the shortlist,
        # orientations, first): the pre-scan's best; in a two-way index the best TEXTURE_RANK by the wide
        # pre-scan (entries cropped from the query), its first as a best entry; the pre-scan's next ones
        todo = [(0, by_pre[0], _near_best(pres[by_pre[0]]), True)]
        if wides is not None:
            by_wide = sorted(range(len(listed)), key=lambda j: -float(wides[j].max()))
            todo += [
                (-1, j, _near_best(wides[j]), n == 0)
                for n, j in enumerate(by_wide[:TEXTURE_RANK])
                if j != by_pre[0]
            ]
        taken = {j for _, j, _, _ in todo}
        todo += [
            (rank, j, _near_best(pres[j]), False)
            for rank, j in enumerate(by_pre[: 2 * TEXTURE_RANK])
            if j not in taken
        ]
        ranked = []
        best = Match(0.0, None)
        verified: set[int] = set()
        reach = TEXTURE_RANK
        for rank, j, near, first in todo:
            if rank >= reach:
                break
            i, listed_score = listed[j]
            tex = probe.texture(self._grays[i], near, first=first)
            ranked.append((float(tex.scores.max()), i, listed_score, tex))
            if tex.scores.max() >= EARLY and len(verified) < MAX_CANDIDATES:  # most copies: verified at once
                verified.add(i)
                best = self._verify(probe, i, listed_score, tex, best)
                if best.similarity >= VERIFIED:
                    return best
                # a look-alike lined up at 64 px and is no copy: smooth moles crowd the pre-scan (within
                # 0.01 of each other), so the copied entry may rank just below the cut
                reach = 2 * TEXTURE_RANK
        ranked.sort(key=lambda t: -t[0])
        for coarse, i, listed_score, tex in ranked[:MAX_CANDIDATES]:
            if coarse < gate:
                break
            if i not in verified:
                best = self._verify(probe, i, listed_score, tex, best)
                if best.similarity >= VERIFIED:
                    return best
        return best

    def _verify(self, probe: _Probe, i: int, listed_score: float, tex: _Texture, best: Match) -> Match:
        """Verify row ``i`` in its best orientation (and the second when it lines up too); the better
        of that and ``best``."""
        entry = int(self._owners[i])
        for k in tex.order():
            s = tex.similarity(probe, k)
            if s > best.similarity or best.label is None:
                best = Match(s, self._labels[entry], entry, k, listed_score)
            if s >= VERIFIED:
                return best
        return best

    def nearest(self, fp: Fingerprint) -> tuple[float, str | None]:
        """(best copy similarity, label of that entry); (0.0, None) when nothing passes the gate."""
        m = self.match(fp)
        return m.similarity, m.label

    def similarity(self, fp: Fingerprint) -> float:
        return self.match(fp).similarity


class DuplicateScorer(Scorer):
    """Similarity to the closest earlier image of the run, 0..1 (1 = exact copy).

    Stateful: :meth:`score` compares with the images :meth:`add`-ed so far (the filter adds every kept
    image) and does not add. 0 when no earlier image passes the texture gate. Distinct kept samples
    score <= 0.88; near copies (re-compressed, resized, cropped, turned, colour-shifted) >= 0.94.
    """

    names = ("duplicate",)

    def __init__(self) -> None:
        self.index = FingerprintIndex(both_ways=True)

    def compute(self, view: ImageView) -> dict[str, float]:
        return {"duplicate": self.index.similarity(fingerprint(view))}

    def add(self, image: np.ndarray | ImageView | Fingerprint, label: str = "") -> None:
        fp = image if isinstance(image, Fingerprint) else fingerprint(image)
        self.index.add(fp, label)

    def reset(self) -> None:
        self.index.clear()


def iter_image_files(
    root: str | os.PathLike[str], extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> list[Path]:
    """Image files under ``root`` (recursive, by extension, case-insensitive), sorted by relative path."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"image folder {str(base)!r} does not exist or is not a directory")
    files = [p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in extensions]
    return sorted(files, key=lambda p: p.relative_to(base).as_posix())


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray | None:
    """Decode an image file to HxWx3 uint8 RGB with OpenCV; None when it cannot be decoded."""
    return decode_rgb(np.fromfile(str(path), dtype=np.uint8))


def decode_rgb(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray | None:
    """Decode encoded image bytes (PNG, JPEG, WebP) to HxWx3 uint8 RGB; None when they cannot be decoded."""
    data = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        return None
    return np.ascontiguousarray(img[..., ::-1])


class MemorisationScorer(Scorer):
    """Similarity to the closest reference (fine-tuning) image, 0..1 (1 = exact copy).

    The references are every png/jpg/jpeg/webp under ``reference_dir`` (recursive; or a local run's kept
    images), fingerprinted once and cached by content (:mod:`dermgen.filters.reference_index`). Same
    measure as :class:`DuplicateScorer`: exact and near copies score >= 0.94, different images <= 0.88
    (0 when no reference passes the texture gate).
    """

    names = ("memorisation",)

    def __init__(
        self, reference_dir: str | os.PathLike[str] | None = None, index: FingerprintIndex | None = None
    ):
        self.reference = None
        if index is None:
            if reference_dir is not None:
                from dermgen.filters.reference_index import load_reference_index

                self.reference = load_reference_index(reference_dir)
                index = self.reference.index
            else:
                index = FingerprintIndex()
        self.index = index

    def compute(self, view: ImageView) -> dict[str, float]:
        return {"memorisation": self.index.similarity(fingerprint(view))}

    def nearest(self, image: np.ndarray | ImageView) -> tuple[float, str | None]:
        """(similarity, path) of the closest reference image."""
        sim, label = self.index.nearest(fingerprint(image))
        if label is not None and self.reference is not None:
            label = str(self.reference.path(label))
        return sim, label
