"""Near-duplicates within a run and memorised copies of reference (fine-tuning) images.

Two images are compared in two steps:

1. a cheap, shift-tolerant preselection: cosine similarity of blurred 16x16 Lab thumbnails (L made
   zero-mean, so brightness changes do not matter). Copies score >= 0.94, and only candidates with
   >= :data:`GATE` (the best :data:`MAX_CANDIDATES`) go on to step 2;
2. a verification: align the two 128x128 grey images (template matching on a coarse band over a few
   scales, then ECC affine refinement on a finer band) and take the correlation of the finer band
   (difference of Gaussians, sigma 0.7 and 2) after alignment, 0..1.

Generated moles look alike at low resolution (distinct kept samples reach a thumbnail cosine of 0.98
and a 64-bit pHash distance of 2), but their fine texture differs: after alignment, distinct kept
samples correlate <= 0.83 while re-compressed, resized, shifted, cropped or brightness-changed copies
correlate >= 0.94.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dermgen.filters.base import ImageView, Scorer, check_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "DuplicateScorer",
    "Fingerprint",
    "FingerprintIndex",
    "MemorisationScorer",
    "copy_similarity",
    "fingerprint",
    "iter_image_files",
    "phash",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
SIDE = 128  # verification resolution
MARGIN = 12  # px left out around the template (tolerates ~9% shifts and crops)
SCALES = (0.96, 1.0, 1.04, 1.08, 1.12)  # zoom of the other image tried by template matching
GATE = 0.9  # thumbnail cosine needed for a verification (copies: >= 0.94)
MAX_CANDIDATES = 2
ECC_ITERATIONS = 10


@dataclass(frozen=True)
class Fingerprint:
    """What is kept of an image for copy detection: a 768-float thumbnail and a 128x128 grey copy."""

    thumb: np.ndarray  # float32 (768,), unit norm
    gray: np.ndarray  # uint8 (128, 128)


def fingerprint(image: np.ndarray | ImageView) -> Fingerprint:
    """The fingerprint of an image (array or view); cached on a view."""
    view = image if isinstance(image, ImageView) else ImageView(image)
    if "fingerprint" in view.cache:
        return view.cache["fingerprint"]
    lab = cv2.resize(view.small_lab, (16, 16), interpolation=cv2.INTER_AREA)
    lab = cv2.GaussianBlur(lab, (0, 0), 1.0).reshape(-1, 3)
    lab[:, 0] -= lab[:, 0].mean()
    thumb = lab.ravel().astype(np.float32)
    thumb /= float(np.linalg.norm(thumb)) + 1e-6
    gray = view.small_gray
    if gray.shape != (SIDE, SIDE):
        gray = cv2.resize(gray, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    fp = Fingerprint(thumb, np.ascontiguousarray(gray))
    view.cache["fingerprint"] = fp
    return fp


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
    fine = cv2.GaussianBlur(g, (0, 0), 0.7) - cv2.GaussianBlur(g, (0, 0), 2.0)
    return coarse, fine


def _subpixel(r: np.ndarray, x: int, y: int) -> tuple[float, float]:
    def vertex(a: float, b: float, c: float) -> float:
        d = a - 2 * b + c
        return 0.0 if abs(d) < 1e-9 else 0.5 * (a - c) / d

    dx = vertex(r[y, x - 1], r[y, x], r[y, x + 1]) if 0 < x < r.shape[1] - 1 else 0.0
    dy = vertex(r[y - 1, x], r[y, x], r[y + 1, x]) if 0 < y < r.shape[0] - 1 else 0.0
    return x + dx, y + dy


_MASK = np.zeros((SIDE, SIDE), np.uint8)
_MASK[MARGIN:-MARGIN, MARGIN:-MARGIN] = 1


def copy_similarity(a: Fingerprint, b: Fingerprint) -> float:
    """How exactly ``a`` is a (shifted, scaled, re-encoded) copy of ``b``, 0..1 (see module doc)."""
    a_coarse, a_fine = _bands(a.gray)
    b_coarse, b_fine = _bands(b.gray)
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
    _, s, x, y = best
    # affine map from a's pixel grid to b's: b = (a + (x - MARGIN, y - MARGIN)) / s
    warp = np.float32([[1 / s, 0, (x - MARGIN) / s], [0, 1 / s, (y - MARGIN) / s]])
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERATIONS, 1e-5)
    try:
        _, warp = cv2.findTransformECC(a_fine, b_fine, warp, cv2.MOTION_AFFINE, criteria, _MASK, 1)
    except cv2.error:  # no texture to align on, or ECC diverged: keep the template-matching warp
        pass
    warped = cv2.warpAffine(
        b_fine, warp, (SIDE, SIDE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=np.nan
    )
    va = a_fine[MARGIN:-MARGIN, MARGIN:-MARGIN].ravel()
    vb = warped[MARGIN:-MARGIN, MARGIN:-MARGIN].ravel()
    ok = np.isfinite(vb)
    if int(ok.sum()) < 100:
        return 0.0
    va = va[ok] - va[ok].mean()
    vb = vb[ok] - vb[ok].mean()
    denom = float(np.linalg.norm(va) * np.linalg.norm(vb))
    if denom < 1e-6:  # two flat frames: identical if their grey levels match
        return 1.0 if abs(float(a.gray.mean()) - float(b.gray.mean())) < 2 else 0.0
    return float(np.clip(va @ vb / denom, 0.0, 1.0))


class FingerprintIndex:
    """A growing set of fingerprints with :meth:`similarity` = best copy similarity to any of them."""

    def __init__(self) -> None:
        self._grays: list[np.ndarray] = []
        self._labels: list[str] = []
        # the thumbnails as rows of one matrix, grown by doubling (adding is O(1) amortised, never a
        # re-stack of every entry); about 20 KB per entry in all (thumbnail + 128x128 grey copy)
        self._thumbs = np.empty((0, 0), np.float32)

    def __len__(self) -> int:
        return len(self._grays)

    def add(self, fp: Fingerprint, label: str = "") -> None:
        n = len(self._grays)
        if n == self._thumbs.shape[0]:
            grown = np.empty((max(64, 2 * n), fp.thumb.shape[0]), np.float32)
            if n:
                grown[:n] = self._thumbs[:n]
            self._thumbs = grown
        self._thumbs[n] = fp.thumb
        self._grays.append(fp.gray)
        self._labels.append(label)

    def clear(self) -> None:
        self._grays.clear()
        self._labels.clear()
        self._thumbs = np.empty((0, 0), np.float32)

    def nearest(self, fp: Fingerprint) -> tuple[float, str | None]:
        """(best copy similarity, label of that entry); (0.0, None) when nothing passes the gate."""
        if not self._grays:
            return 0.0, None
        cos = self._thumbs[: len(self._grays)] @ fp.thumb
        top = np.argpartition(-cos, MAX_CANDIDATES)[:MAX_CANDIDATES] if len(cos) > MAX_CANDIDATES else None
        order = np.argsort(-cos) if top is None else top[np.argsort(-cos[top])]
        best, label = 0.0, None
        for i in order:
            if cos[i] < GATE:
                break
            s = copy_similarity(fp, Fingerprint(self._thumbs[i], self._grays[i]))
            if s > best:
                best, label = s, self._labels[i]
        return best, label

    def similarity(self, fp: Fingerprint) -> float:
        return self.nearest(fp)[0]


class DuplicateScorer(Scorer):
    """Similarity to the closest earlier image of the run, 0..1 (1 = exact copy).

    Stateful: :meth:`score` compares with the images :meth:`add`-ed so far (the filter adds every kept
    image) and does not add. 0 when no earlier image passes the thumbnail gate. Distinct kept samples
    score <= 0.83; near copies (re-compressed, resized, shifted, cropped, brightness-changed) >= 0.94.
    """

    names = ("duplicate",)

    def __init__(self) -> None:
        self.index = FingerprintIndex()

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

    The references are every png/jpg/jpeg/webp under ``reference_dir`` (recursive), fingerprinted once
    at construction. Same measure as :class:`DuplicateScorer`: exact and near copies score >= 0.94,
    different images <= 0.83 (0 when no reference passes the thumbnail gate).
    """

    names = ("memorisation",)

    def __init__(
        self, reference_dir: str | os.PathLike[str] | None = None, index: FingerprintIndex | None = None
    ):
        if index is None:
            index = FingerprintIndex()
            if reference_dir is not None:
                unreadable = 0
                for path in iter_image_files(reference_dir):
                    img = read_rgb(path)
                    if img is None:
                        unreadable += 1
                        continue
                    index.add(fingerprint(check_image(img)), str(path))
                if unreadable:
                    log.warning(
                        "memorisation: %d unreadable files under %s were skipped", unreadable, reference_dir
                    )
                log.info("memorisation: %d reference images from %s", len(index), reference_dir)
        self.index = index

    def compute(self, view: ImageView) -> dict[str, float]:
        return {"memorisation": self.index.similarity(fingerprint(view))}

    def nearest(self, image: np.ndarray | ImageView) -> tuple[float, str | None]:
        """(similarity, path) of the closest reference image."""
        return self.index.nearest(fingerprint(image))
