"""Throughput of the default filter on 512x512 images: images per second per CPU core.

Single process, single thread (``cv2.setNumThreads(1)``; torch is not used). The stream mixes the
kept samples with noisy variants (one of each category per sample, so images look like a real run's
mix) and runs ``ImageFilter.evaluate`` on each, duplicate index included (it grows over the run).
Decoding is not timed. The last line printed is one JSON object.

    python benchmarks/filter_throughput.py [--quick] [--images N] [--samples DIR]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core: no BLAS threads
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dermgen.filters import SCORE_NAMES, ImageView, build_filter  # noqa: E402
from filterlab import noise  # noqa: E402
from filterlab.evaluation import load_samples  # noqa: E402
from filterlab.samples import sample_root  # noqa: E402


def _stream(samples, n: int) -> list[np.ndarray]:
    cats = (None, *noise.CATEGORIES)
    out = []
    i = 0
    while len(out) < n:
        s = samples[i % len(samples)]
        cat = cats[(i // len(samples)) % len(cats)]
        img = s.image if cat is None else noise.make_noisy(s.image, cat, "heavy", f"tp{i}-{s.name}")
        if img.shape[:2] != (512, 512):
            img = cv2.resize(img, (512, 512), interpolation=cv2.INTER_AREA)
        out.append(img)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (40 images)")
    parser.add_argument("--images", type=int, default=None, help="images to time (default 600, quick 40)")
    parser.add_argument("--samples", default=None, help="default: $DERMGEN_SAMPLES or the test assets")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    n = args.images or (40 if args.quick else 600)
    cal, test = load_samples(args.samples or sample_root(), limit_per_class=4 if args.quick else None)
    images = _stream(cal + test, n)

    flt = build_filter("default")
    flt.evaluate(images[0])  # warm-up (first calls allocate)
    flt.reset()
    per_scorer = {type(s).__name__: 0.0 for s in flt.scorers}
    t0 = time.process_time()
    w0 = time.perf_counter()
    kept = 0
    for img in images:
        kept += flt.evaluate(img).kept
    cpu = time.process_time() - t0
    wall = time.perf_counter() - w0

    # where the time goes (a second, separate pass over a subset)
    sub = images[: min(len(images), 100)]
    for img in sub:
        view = ImageView(img)
        for s in flt.scorers:
            t = time.perf_counter()
            s.compute(view)
            per_scorer[type(s).__name__] += time.perf_counter() - t
    per_scorer_ms = {k: round(1000 * v / len(sub), 2) for k, v in per_scorer.items()}

    result = {
        "images": len(images),
        "image_size": [512, 512],
        "images_per_second_per_core": round(len(images) / cpu, 1),
        "images_per_second_wall": round(len(images) / wall, 1),
        "ms_per_image_cpu": round(1000 * cpu / len(images), 2),
        "kept": int(kept),
        "per_scorer_ms": per_scorer_ms,
        "scores": list(SCORE_NAMES),
        "threads": 1,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "quick": args.quick,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
