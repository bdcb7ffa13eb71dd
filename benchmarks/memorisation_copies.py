"""Memorisation on real kept samples: every sample is a reference; hard copies of each (all eight
orientations, cropped up to 10% per side, resized 0.5x-2x, colour-shifted, JPEG q75) must be dropped with
the reason ``memorisation``, and no sample may be taken for a copy of another (leave-one-out).

    python benchmarks/memorisation_copies.py [--samples DIR] [--quick]

Prints JSON (last line). ``--quick`` uses the 12 downscaled samples in tests/assets/memorisation and two
orientations each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from dermgen.filters import build_filter  # noqa: E402
from dermgen.filters.dedup import (  # noqa: E402
    FingerprintIndex,
    MemorisationScorer,
    fingerprint,
    iter_image_files,
    read_rgb,
)
from dermgen.filters.rule import FilterConfig  # noqa: E402
from filterlab.copies import hard_copy  # noqa: E402
from filterlab.samples import sample_root  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--samples",
        default=None,
        help="folder of kept samples (default: the 120 kept samples, $DERMGEN_SAMPLES or the repository's copies)",
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=2026, help="draws of the copies (crop, zoom, colour shift)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    if args.quick:
        root, orientations = ROOT / "tests" / "assets" / "memorisation", (0, 5)
    else:
        root, orientations = Path(args.samples) if args.samples else sample_root(), tuple(range(8))
    files = iter_image_files(root)
    images = [read_rgb(f) for f in files]
    fps = [fingerprint(img) for img in images]
    index = FingerprintIndex()
    for f, fp in zip(files, fps, strict=True):
        index.add(fp, f.relative_to(root).as_posix())
    flt = build_filter("default", overrides={"duplicate": None})
    flt.memorisation = MemorisationScorer(index=index)
    threshold = FilterConfig().thresholds()["memorisation"]
    rng = np.random.default_rng(args.seed)
    copies, dropped_mem, missed, times = 0, 0, [], []
    for f, img in zip(files, images, strict=True):
        for k in orientations:
            copy = hard_copy(img, rng, k)
            t = time.perf_counter()
            res = flt.evaluate(copy)
            times.append(time.perf_counter() - t)
            copies += 1
            if any(r.startswith("memorisation") for r in res.reasons):
                dropped_mem += 1
            else:
                missed.append([f.name, k, round(res.scores["memorisation"] or 0.0, 3)])
    # leave-one-out: each sample against the index of all the others
    labels = index.labels
    false_matches, others = [], []
    for i in range(len(files)):
        m = index.match(fps[i], exclude=i)
        others.append(m.similarity)
        if m.similarity > threshold:
            false_matches.append([labels[i], m.label, round(m.similarity, 3)])
    out = {
        "samples": len(files),
        "seed": args.seed,
        "orientations": len(orientations),
        "copies": copies,
        "copies_dropped_memorisation": dropped_mem,
        "copy_drop_rate": round(dropped_mem / copies, 4),
        "missed": missed[:20],
        "others_kept_rate": round(1 - len(false_matches) / len(files), 4),
        "false_matches": false_matches,
        "others_max_similarity": round(max(others), 3),
        "threshold": threshold,
        "filter_ms_per_copy_p50": round(1e3 * float(np.median(times)), 1),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
