"""Rebuild tests/assets/ from the full Derm-T2IM sample folders (not run by the tests).

    python tests/assets/regenerate.py --samples ../shared/data/derm-t2im-samples \
        --discarded ../shared/data/derm-t2im-discarded [--quality 90]

The 120 kept samples (512x512 PNGs) become 512x512 JPEGs (4:4:4, Huffman-optimised) with the PNG's
A1111 ``parameters`` text in the JPEG comment; ``filterlab.samples.materialise_samples`` turns them
back into PNGs with the original names and ``parameters`` chunk. The nine discarded samples are
copied byte for byte (they are small).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

ASSETS = Path(__file__).resolve().parent
LABELS = ("benign", "malignant")


def reduce_samples(src: Path, dest: Path, quality: int) -> int:
    """Re-encode every ``src/<label>/*.png`` as ``dest/<label>/<stem>.jpg``; returns the count."""
    n = 0
    for label in LABELS:
        out = dest / label
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for png in sorted((src / label).glob("*.png")):
            with Image.open(png) as im:
                text = im.info.get("parameters", "")
                im.convert("RGB").save(
                    out / f"{png.stem}.jpg",
                    format="JPEG",
                    quality=quality,
                    subsampling=0,
                    optimize=True,
                    comment=text.encode("utf-8"),
                )
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=Path, required=True, help="folder with benign/ and malignant/ PNGs")
    ap.add_argument("--discarded", type=Path, help="folder of the discarded samples (copied as they are)")
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality (default: %(default)s)")
    args = ap.parse_args()
    n = reduce_samples(args.samples, ASSETS / "derm-t2im-samples", args.quality)
    print(f"{n} samples written at quality {args.quality}")
    if args.discarded:
        dest = ASSETS / "derm-t2im-discarded"
        dest.mkdir(exist_ok=True)
        for f in sorted(args.discarded.glob("*.png")):
            shutil.copyfile(f, dest / f.name)
        print(f"discarded samples copied to {dest}")


if __name__ == "__main__":
    main()
