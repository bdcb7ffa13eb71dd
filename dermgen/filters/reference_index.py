"""The memorisation reference index: fingerprints of a reference (fine-tuning) image set, cached on disk.

The cache key is the reference set's content hash: sha256 over the sorted relative paths and each file's
sha256 (the same rule as the LoRA card's data fingerprint, so a card's ``data.sha256`` names the index of
its training folder). The cache lives under ``$DERMGEN_CACHE/memorisation/<hash>/`` (default
``~/.cache/dermgen``) as ``rings.npy`` (float32, N x 3 x 36), ``thumbs.npy`` (float32, N x 144),
``pre.npy`` (float16, N x 576), ``grays.npy`` (uint8, N x 128 x 128, memory mapped when read back),
``labels.json`` (relative paths) and ``meta.json``. A reference set is a folder of images (recursive) or a
local generation run (its ``images/kept`` folder).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dermgen.filters.base import check_image
from dermgen.filters.dedup import FingerprintIndex, fingerprint, iter_image_files, read_rgb
from dermgen.hashing import sha256_file

__all__ = ["INDEX_VERSION", "ReferenceIndex", "index_cache_dir", "load_reference_index", "reference_folder"]

log = logging.getLogger(__name__)

INDEX_VERSION = 4  # bump when the fingerprint changes: old caches are then ignored (2: pre-scan templates,
# 3: shortlist thumbnails, 4: a second row for the central square of a non-square reference)


@dataclass
class ReferenceIndex:
    """A reference set's fingerprints: ``index`` labels are paths relative to ``root``."""

    root: Path
    sha256: str
    index: FingerprintIndex
    unreadable: int = 0
    cached: bool = False
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.index)

    def path(self, label: str) -> Path:
        return self.root / label


def index_cache_dir() -> Path:
    base = os.environ.get("DERMGEN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dermgen")
    return Path(base) / "memorisation"


def reference_folder(source: str | os.PathLike[str]) -> Path:
    """The image folder of a reference set: a folder of images, or a local run's ``images/kept``."""
    root = Path(source)
    if (root / "run.json").is_file():
        return root / "images" / "kept"
    if not root.is_dir():
        raise FileNotFoundError(f"reference {str(root)!r} is not a folder of images or a local dermgen run")
    return root


def content_hash(root: Path, files: list[Path]) -> str:
    """sha256 over the sorted relative paths and each file's sha256."""
    h = hashlib.sha256()
    for rel, digest in sorted((f.relative_to(root).as_posix(), sha256_file(f, cache=False)) for f in files):
        h.update(rel.encode())
        h.update(b"\0")
        h.update(digest.encode())
        h.update(b"\n")
    return h.hexdigest()


def _load_cached(folder: Path) -> tuple[FingerprintIndex, int] | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("version") != INDEX_VERSION:
            return None
        labels = json.loads((folder / "labels.json").read_text())
        rings = np.load(folder / "rings.npy")
        grays = np.load(folder / "grays.npy", mmap_mode="r")
        pre = np.load(folder / "pre.npy")
        thumbs = np.load(folder / "thumbs.npy")
        owners = np.load(folder / "owners.npy")
        index = FingerprintIndex.from_arrays(rings, grays, labels, pre, thumbs, owners)
        return index, int(meta.get("unreadable", 0))
    except (OSError, ValueError, KeyError):
        return None


def _save(folder: Path, index: FingerprintIndex, meta: dict) -> None:
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    arrays = index.arrays(pre=True)
    np.save(tmp / "rings.npy", arrays["rings"])
    np.save(tmp / "grays.npy", arrays["grays"])
    np.save(tmp / "pre.npy", arrays["pre"])
    np.save(tmp / "thumbs.npy", arrays["thumbs"])
    np.save(tmp / "owners.npy", arrays["owners"])
    (tmp / "labels.json").write_text(json.dumps(index.labels))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    if folder.exists() and _cached_version(folder) != INDEX_VERSION:  # a stale cache (older fingerprint)
        stale = folder.with_name(folder.name + f".stale{os.getpid()}")
        try:
            folder.replace(stale)
            shutil.rmtree(stale, ignore_errors=True)
        except OSError:  # another process moved it first
            pass
    try:
        tmp.replace(folder)
    except OSError:  # another process cached the same set first
        shutil.rmtree(tmp, ignore_errors=True)


def _cached_version(folder: Path) -> object:
    try:
        return json.loads((folder / "meta.json").read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return None


def load_reference_index(
    source: str | os.PathLike[str], *, cache: bool = True, content_sha256: str | None = None
) -> ReferenceIndex:
    """Fingerprint every image of a reference set, or read them back from the cache.

    ``content_sha256`` skips hashing the files when the caller already knows the set's hash.
    """
    start = time.perf_counter()
    root = reference_folder(source)
    files = iter_image_files(root)
    digest = content_sha256 or content_hash(root, files)
    folder = index_cache_dir() / digest
    if cache:
        hit = _load_cached(folder)
        if hit is not None:
            index, unreadable = hit
            log.info("memorisation: %d reference images from the cache %s", len(index), folder)
            return ReferenceIndex(root, digest, index, unreadable, True, time.perf_counter() - start)
    index = FingerprintIndex()
    unreadable = 0
    for path in files:
        img = read_rgb(path)
        if img is None:
            unreadable += 1
            continue
        try:
            index.add(fingerprint(check_image(img)), path.relative_to(root).as_posix())
        except ValueError:
            unreadable += 1
    if unreadable:
        log.warning("memorisation: %d unreadable files under %s were skipped", unreadable, root)
    seconds = time.perf_counter() - start
    log.info("memorisation: indexed %d reference images from %s in %.1fs", len(index), root, seconds)
    if cache:
        meta = {"version": INDEX_VERSION, "root": str(root), "images": len(index), "unreadable": unreadable}
        try:
            _save(folder, index, meta)
        except OSError as exc:
            log.warning("memorisation: could not cache the index in %s (%s)", folder, exc)
    return ReferenceIndex(root, digest, index, unreadable, False, seconds)
