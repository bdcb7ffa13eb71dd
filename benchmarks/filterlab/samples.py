"""The 120 kept Derm-T2IM samples shipped with the repository, as the 512x512 PNG folder tests expect.

``tests/assets/derm-t2im-samples/<label>/<name>.jpg`` holds each sample as a high-quality JPEG (the
original PNGs are 31 MB) with the original A1111 ``parameters`` text in the JPEG comment.
:func:`materialise_samples` writes them back as ``<label>/<name>.png`` with a ``parameters`` text
chunk: same names (so the sha256-of-name calibration split is unchanged), same size, pixels as decoded
from the JPEG. :func:`sample_root` gives a ready folder: ``$DERMGEN_SAMPLES`` when set (e.g. the
original PNGs), else the assets materialised once into a cache folder under the temp directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

__all__ = ["ASSETS_DIR", "DISCARDED_DIR", "SAMPLES_ASSETS", "materialise_samples", "sample_root"]

ASSETS_DIR = Path(__file__).resolve().parents[2] / "tests" / "assets"
SAMPLES_ASSETS = ASSETS_DIR / "derm-t2im-samples"
DISCARDED_DIR = ASSETS_DIR / "derm-t2im-discarded"
LABELS = ("benign", "malignant")
EXPECTED = {"benign": 60, "malignant": 60}


def _sources(src: Path) -> list[Path]:
    """The JPEG assets, checked to be all there (a missing asset is an error, never a skip)."""
    files = []
    for label in LABELS:
        found = sorted((src / label).glob("*.jpg"))
        if len(found) != EXPECTED[label]:
            raise FileNotFoundError(
                f"expected {EXPECTED[label]} JPEG samples in {src / label}, found {len(found)}: "
                "the test assets are incomplete (see tests/assets/README.md)"
            )
        files += found
    return files


def materialise_samples(dest: str | os.PathLike[str], src: str | os.PathLike[str] = SAMPLES_ASSETS) -> Path:
    """Write ``dest/<label>/<name>.png`` (with its ``parameters`` chunk) for every JPEG asset; returns dest."""
    src, dest = Path(src), Path(dest)
    for jpg in _sources(src):
        out = dest / jpg.parent.name / f"{jpg.stem}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(jpg) as im:
            info = PngInfo()
            comment = im.info.get("comment", b"")
            if comment:
                info.add_text("parameters", comment.decode("utf-8"))
            im.convert("RGB").save(out, format="PNG", pnginfo=info, compress_level=3)
    return dest


def _digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.parent.name}/{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def sample_root() -> Path:
    """``$DERMGEN_SAMPLES`` when set, else the repository's sample assets as PNGs (materialised once)."""
    env = os.environ.get("DERMGEN_SAMPLES")
    if env:
        return Path(env)
    files = _sources(SAMPLES_ASSETS)
    cache = Path(tempfile.gettempdir()) / f"dermgen-samples-{_digest(files)}"
    if not cache.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=cache.name + ".", dir=cache.parent))
        materialise_samples(tmp)
        try:
            tmp.rename(cache)
        except OSError:  # another process got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return cache
