"""Fine-tuning preprocessing: resize + centre-crop to the training resolution and remove hair (DullRazor).

The study resized its 1,400 + 1,400 ISIC seed images to 512x512 and removed hair with a DullRazor-style
filter before DreamBooth fine-tuning (PAPER.md, "Fine-tuning"). `preprocess_source` does the same to a
folder laid out ``<root>/<label>/*.{png,jpg,jpeg}`` or to the kept rows of a generation run (local or
s3://), in parallel over files, and writes ``<output>/<label>/<name>.png`` plus ``manifest.json``.

Hair removal (:func:`remove_hair`) follows DullRazor: grayscale, black-hat morphology with a cross
structuring element (dark structures thinner than the element light up), threshold, then inpainting
(Telea) over the mask. One addition keeps hair-free images almost unchanged: only long, thin connected
components of the thresholded black-hat count as hair (pigment dots and globules inside a lesion are
compact and are left alone).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dermgen.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "MANIFEST",
    "ImageSource",
    "hair_mask",
    "hair_score",
    "hair_score_name",
    "is_run",
    "list_sources",
    "load_rgb",
    "preprocess_image",
    "preprocess_source",
    "remove_hair",
    "resize_center_crop",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MANIFEST = "manifest.json"

# DullRazor parameters at a 512 px reference side; scaled with the image side.
REF_SIDE = 512
KERNEL_SIDE = 17  # cross structuring element: dark structures narrower than ~17 px at 512 light up
BLACKHAT_LEVEL = 12  # grey levels darker than the closing around them (DullRazor uses 10 on ~700 px)
MIN_EXTENT = 0.05  # a hair component spans at least 5% of the side (26 px at 512)
MAX_FILL = 0.35  # area / extent^2 below this: elongated, not a blob or a dot
DILATE = 1  # px at 512: cover the anti-aliased edge of a hair
INPAINT_RADIUS = 5  # px at 512 (DullRazor uses 6)


def _scaled(value: float, side: int, minimum: int = 1) -> int:
    return max(minimum, int(round(value * side / REF_SIDE)))


def _check_rgb(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be an HxWx3 uint8 RGB array, got {got}")
    if min(image.shape[:2]) < 8:
        raise ValueError(f"image must be at least 8x8 pixels, got {image.shape[1]}x{image.shape[0]}")
    return np.ascontiguousarray(image)


def hair_mask(image: np.ndarray) -> np.ndarray:
    """Boolean HxW mask of hair pixels: DullRazor black-hat (cross element), threshold, long thin parts only.

    Sizes scale with the shorter side (the constants are for 512 px), so the same image at 64 px or
    1024 px gives about the same mask.
    """
    image = _check_rgb(image)
    side = min(image.shape[:2])
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    k = _scaled(KERNEL_SIDE, side, 3) | 1  # odd
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (k, k))
    blackhat = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel)
    blackhat = cv2.GaussianBlur(blackhat, (3, 3), 0)
    candidates = (blackhat > BLACKHAT_LEVEL).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(candidates, connectivity=8)
    extent = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]).astype(np.float64)
    area = stats[:, cv2.CC_STAT_AREA]
    keep = (extent >= MIN_EXTENT * side) & (area < MAX_FILL * extent**2)
    keep[0] = False
    mask = keep[labels].astype(np.uint8)
    d = _scaled(DILATE, side, 0)
    if d and mask.any():
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * d + 1, 2 * d + 1)))
    return mask.astype(bool)


def remove_hair(image: np.ndarray) -> np.ndarray:
    """DullRazor hair removal: inpaint (Telea) the pixels of :func:`hair_mask`. Hair-free images come back as is."""
    image = _check_rgb(image)
    mask = hair_mask(image)
    if not mask.any():
        return image.copy()
    radius = _scaled(INPAINT_RADIUS, min(image.shape[:2]))
    return cv2.inpaint(image, mask.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)


def _filters_hair_scorer() -> Callable[[np.ndarray], float] | None:
    try:
        from dermgen.filters.hair import HairScorer
    except ImportError:  # pragma: no cover - the filters package is part of dermgen
        return None
    scorer = HairScorer()
    return lambda img: float(scorer.score(img))


_HAIR_SCORER = _filters_hair_scorer()


def hair_score_name() -> str:
    """Which measure :func:`hair_score` uses (recorded in the manifest)."""
    return "dermgen.filters.hair.HairScorer" if _HAIR_SCORER else "dermgen.preprocess.hair_mask fraction"


def hair_score(image: np.ndarray) -> float:
    """Hair density in 0..1: the filter stage's `hair` score when available, else the hair-mask fraction."""
    image = _check_rgb(image)
    if _HAIR_SCORER is not None:
        return _HAIR_SCORER(image)
    return float(hair_mask(image).mean())


def resize_center_crop(image: np.ndarray, resolution: int) -> np.ndarray:
    """Scale the shorter side to ``resolution`` (area when shrinking, Lanczos when growing), crop the centre."""
    image = _check_rgb(image)
    h, w = image.shape[:2]
    scale = resolution / min(h, w)
    if (h, w) != (resolution, resolution):
        nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LANCZOS4
        image = cv2.resize(image, (nw, nh), interpolation=interp)
        y0, x0 = (nh - resolution) // 2, (nw - resolution) // 2
        image = np.ascontiguousarray(image[y0 : y0 + resolution, x0 : x0 + resolution])
    return image


def load_rgb(data: bytes | str | os.PathLike) -> np.ndarray:
    """Decode an image file or bytes into HxWx3 uint8 RGB (EXIF orientation applied, alpha dropped)."""
    from PIL import Image, ImageOps

    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    with Image.open(src) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"))


def encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


@dataclass(frozen=True)
class ImageSource:
    """One input image: its label, output name and where its bytes come from (a path or the bytes)."""

    label: str
    name: str
    origin: str  # path or run-relative id, for the manifest
    path: str | None = None
    data: bytes | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        return Path(self.path).read_bytes()  # type: ignore[arg-type]


def is_run(uri: str | os.PathLike) -> bool:
    """True for an s3:// URI or a local folder holding a generation run (run.json or shards/)."""
    from dermgen.rundir import RunDir

    return RunDir.looks_like_run(uri)


def _folder_sources(root: Path, arg: str) -> list[ImageSource]:
    if not root.is_dir():
        raise ConfigError(f"{arg}: {str(root)!r} is not a folder; expected <root>/<label>/*.png|jpg or a run")
    out: list[ImageSource] = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in label_dir.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        stems = Counter(f.stem for f in files)
        for f in files:
            name = f.stem if stems[f.stem] == 1 else f"{f.stem}_{f.suffix.lower().lstrip('.')}"
            out.append(ImageSource(label_dir.name, name, str(f.relative_to(root)), path=str(f)))
    if not out:
        raise ConfigError(
            f"{arg}: {str(root)!r} holds no images in label folders; expected <root>/<label>/*.png|jpg|jpeg "
            "(e.g. isic/benign/ISIC_0000000.jpg)"
        )
    return out


def _run_sources(uri: str, arg: str) -> list[ImageSource]:
    from dermgen.rundir import RunDir, image_bytes

    rd = RunDir.open(uri, arg)
    store = rd.store
    table = rd.rows(["sample_id", "label", "status", "kept", "image"])
    out = []
    for row in table.to_pylist():
        if not row["kept"] or row["status"] != "ok":
            continue
        data = image_bytes(store, row["image"])  # the row's bytes, or its PNG object (either layout)
        if data is None:
            continue
        out.append(ImageSource(row["label"], row["sample_id"], f"{uri}#{row['sample_id']}", data=data))
    if not out:
        raise ConfigError(f"{arg}: run {uri!r} has no kept rows with images")
    return sorted(out, key=lambda s: (s.label, s.name))


def list_sources(uri: str | os.PathLike, *, arg: str = "input") -> list[ImageSource]:
    """The images of a labelled folder or the kept rows of a run, sorted by (label, name).

    ``arg`` names the argument in error messages (``input``, ``--data``, ``--class-data``).
    """
    return _run_sources(str(uri), arg) if is_run(uri) else _folder_sources(Path(uri), arg)


def preprocess_image(
    image: np.ndarray, resolution: int, remove: bool = True
) -> tuple[np.ndarray, dict[str, float]]:
    """Resize/crop then (optionally) remove hair; returns the image and its hair statistics."""
    image = resize_center_crop(image, resolution)
    before = hair_score(image)
    mask_fraction = float(hair_mask(image).mean()) if remove else 0.0
    out = remove_hair(image) if remove else image
    after = hair_score(out) if remove else before
    return out, {"hair_before": before, "hair_after": after, "hair_mask_fraction": mask_fraction}


def _process_one(job: tuple[ImageSource, Any, int, bool]) -> dict[str, Any]:
    source, store, resolution, remove = job
    key = f"{source.label}/{source.name}.png"
    try:
        image = load_rgb(source.read())
        out, stats = preprocess_image(image, resolution, remove)
    except Exception as exc:  # a corrupt file must not stop 2,800 others
        return {"source": source.origin, "label": source.label, "error": f"{type(exc).__name__}: {exc}"}
    png = encode_png(out)
    store.put(key, png)
    return {
        "file": key,
        "source": source.origin,
        "label": source.label,
        "width_in": int(image.shape[1]),
        "height_in": int(image.shape[0]),
        "sha256": hashlib.sha256(png).hexdigest(),
        **{k: round(v, 6) for k, v in stats.items()},
    }


def _map(fn: Callable, jobs: list, workers: int) -> Iterator[dict[str, Any]]:
    if workers <= 1 or len(jobs) <= 1:
        yield from map(fn, jobs)
        return
    # spawn: the caller may hold threads (torch, Ray) that a forked child would inherit half-locked
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        yield from pool.map(fn, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers))))


def preprocess_source(
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    resolution: int = 512,
    remove_hair: bool = True,
    workers: int | None = None,
) -> dict[str, Any]:
    """Preprocess every image of ``input`` into ``output``/<label>/<name>.png and write ``manifest.json``.

    ``input`` is a folder ``<root>/<label>/*.{png,jpg,jpeg}`` or a run (local folder or s3://; kept rows
    only). ``output`` is a local folder or an s3:// prefix. Work is spread over ``workers`` processes
    (default: all cores). Returns the summary (also the top of the manifest).
    """
    from dermgen.store import open_store

    if not 8 <= int(resolution) <= 4096:
        raise ConfigError(f"--resolution: got {resolution}, expected 8..4096 pixels")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers: got {workers}, expected a positive number of processes")
    sources = list_sources(input)
    store = open_store(output)
    store.check_writable()
    n_workers = workers or os.cpu_count() or 1
    log.info("preprocessing %d image(s) from %s with %d worker(s)", len(sources), input, n_workers)
    jobs = [(s, store, int(resolution), bool(remove_hair)) for s in sources]
    files, errors = [], []
    for rec in _map(_process_one, jobs, n_workers):
        (errors if "error" in rec else files).append(rec)
    for e in errors:
        log.warning("skipped %s: %s", e["source"], e["error"])
    counts = dict(sorted(Counter(f["label"] for f in files).items()))
    hair_before = [f["hair_before"] for f in files]
    hair_after = [f["hair_after"] for f in files]
    summary: dict[str, Any] = {
        "input": str(input),
        "output": store.uri,
        "resolution": int(resolution),
        "remove_hair": bool(remove_hair),
        "hair_score": hair_score_name(),
        "images": len(files),
        "errors": len(errors),
        "labels": sorted(counts),
        "counts": counts,
        "hair_before_mean": round(float(np.mean(hair_before)), 6) if files else None,
        "hair_after_mean": round(float(np.mean(hair_after)), 6) if files else None,
    }
    manifest = {**summary, "files": files, "skipped": errors}
    store.put(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return summary
