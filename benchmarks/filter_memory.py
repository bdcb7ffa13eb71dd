"""Peak memory of `dermgen filter` on a folder: does it stay flat as the number of images grows?

Writes N distinct synthetic 512x512 skin-like JPEGs (32 skin backgrounds with low-frequency texture, a
lesion of random size, colour and place, a few spots; fixed seeds), then, per N, runs ``filter_folder`` in a fresh child
process and samples the resident memory of that process and of all its descendants (the ``--workers``
scoring pool) every 0.1 s. The peak of the summed RSS is the figure; the largest single process is given
too. The images for a smaller N are the first N of the largest set (symlinks), so sets are nested.

    python benchmarks/filter_memory.py [--quick] [--sizes 2000,6000,12000] [--workers 2] [--dir DIR]
                                       [--prefill 60000]

``--prefill K`` adds one more measurement: the smallest N filtered by a filter whose duplicate index
already holds K kept images (random distinct fingerprints), i.e. the memory at the end of a K-image
run where every image was kept (the worst case: only kept images are indexed).

The last line printed is one JSON object: per N, peak RSS (MiB), seconds, images/s, kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIDE = 512

CHILD = """
import json, sys, time
from pathlib import Path
import numpy as np
from dermgen.filters import build_filter
from dermgen.filters.dedup import RING_DIM, RING_WINDOWS, SIDE, THUMB, Fingerprint, iter_image_files
from dermgen.filters.standalone import filter_folder, filter_images
folder, out, workers, prefill = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t = time.perf_counter()
if prefill:  # the duplicate index of a run that already kept `prefill` images (distinct fingerprints)
    flt = build_filter("default")
    rng = np.random.default_rng(0)

    def random_fingerprints():
        for i in range(prefill):
            v = rng.normal(size=(len(RING_WINDOWS), RING_DIM)).astype(np.float32)
            rings = v / np.linalg.norm(v, axis=1, keepdims=True)  # unit rows, as fingerprint() makes them
            gray = rng.integers(0, 256, (SIDE, SIDE), np.uint8)
            thumb = rng.normal(size=THUMB * THUMB).astype(np.float32)
            yield f"prefill-{i}", Fingerprint(rings, gray, thumb / np.linalg.norm(thumb))

    flt.run_index.seed(random_fingerprints())
    base = Path(folder)
    items = ((p.relative_to(base).as_posix(), p) for p in iter_image_files(base))
    s = filter_images(items, out, flt=flt, workers=workers, keep_rows=False)
else:
    s = filter_folder(folder, out, workers=workers)
s["wall_s"] = time.perf_counter() - t
print(json.dumps(s))
"""


_BACKGROUNDS: list[np.ndarray] = []


def _backgrounds(side: int) -> list[np.ndarray]:
    """32 skin-like backgrounds (random tone, low-frequency texture), made once."""
    if not _BACKGROUNDS:
        rng = np.random.default_rng(12345)
        for _ in range(32):
            skin = np.array([rng.uniform(150, 235), rng.uniform(105, 185), rng.uniform(85, 160)], np.float32)
            texture = cv2.resize(rng.normal(0, 1, (12, 12)).astype(np.float32), (side, side), cv2.INTER_CUBIC)
            img = skin[None, None, :] * (1 + 0.06 * texture[..., None])
            _BACKGROUNDS.append(np.clip(img, 0, 255).astype(np.uint8))
    return _BACKGROUNDS


def synthetic(seed: int, side: int = SIDE) -> np.ndarray:
    """A skin-like RGB image with a lesion, different for every seed: one of 32 backgrounds, a lesion of
    random size, colour, angle and place, and a few random dots (cheap: about a millisecond)."""
    rng = np.random.default_rng(seed)
    img = _backgrounds(side)[seed % 32].copy()
    centre = (int(rng.uniform(0.35, 0.65) * side), int(rng.uniform(0.35, 0.65) * side))
    axes = (int(rng.uniform(0.08, 0.22) * side), int(rng.uniform(0.08, 0.22) * side))
    colour = (int(rng.uniform(60, 130)), int(rng.uniform(35, 80)), int(rng.uniform(20, 60)))
    cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
    for _ in range(int(rng.integers(3, 12))):  # darker spots inside and around the lesion
        spot = (int(centre[0] + rng.normal(0, axes[0] / 2)), int(centre[1] + rng.normal(0, axes[1] / 2)))
        shade = tuple(int(c * rng.uniform(0.5, 0.9)) for c in colour)
        cv2.circle(img, spot, int(rng.integers(2, 9)), shade, -1, cv2.LINE_AA)
    return img


def write_images(root: Path, n: int) -> None:
    """``root/all/img_000000.jpg`` ... (kept when already there)."""
    folder = root / "all"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"img_{i:06d}.jpg"
        if not path.exists():
            cv2.imwrite(str(path), synthetic(i)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])


def subset(root: Path, n: int) -> Path:
    """A folder of symlinks to the first ``n`` images."""
    folder = root / f"n{n}"
    if not folder.exists():
        folder.mkdir()
        for i in range(n):
            (folder / f"img_{i:06d}.jpg").symlink_to(root / "all" / f"img_{i:06d}.jpg")
    return folder


def measure(folder: Path, workers: int, out: Path, prefill: int = 0) -> dict:
    """Run the filter in a child process; peak RSS of it plus its descendants (MiB)."""
    import psutil

    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder), str(out), str(workers), str(prefill)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    root = psutil.Process(proc.pid)
    peak_total = peak_single = 0
    samples = []
    t0 = time.perf_counter()
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.Error:
                    pass
            peak_total = max(peak_total, sum(rss))
            peak_single = max(peak_single, max(rss, default=0))
            samples.append((round(time.perf_counter() - t0, 1), round(sum(rss) / 2**20)))
            if len(samples) % 300 == 0:  # progress on stderr every ~30 s: (seconds, MiB, rows written)
                print(
                    json.dumps({"progress": samples[-1], "peak_mib": round(peak_total / 2**20)}),
                    file=sys.stderr,
                    flush=True,
                )
        except psutil.Error:
            pass
        time.sleep(0.1)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"filter failed:\n{stderr[-3000:]}")
    summary = json.loads(stdout.strip().splitlines()[-1])
    step = max(1, len(samples) // 10)
    return {
        "images": summary["images"],
        "kept": summary["kept"],
        "peak_rss_mib": round(peak_total / 2**20),
        "peak_rss_single_process_mib": round(peak_single / 2**20),
        "seconds": round(summary["wall_s"], 1),
        "images_per_s": round(summary["images"] / summary["wall_s"], 1),
        "rss_over_time_mib": samples[::step],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run (40 and 80 images, 1 worker, prefill 500)"
    )
    parser.add_argument("--sizes", default=None, help="comma-separated N (default 2000,6000,12000)")
    parser.add_argument("--workers", type=int, default=None, help="scoring processes (default 2, quick 1)")
    parser.add_argument("--dir", default=None, help="where to write the images (default: a temp folder)")
    parser.add_argument(
        "--prefill",
        type=int,
        default=0,
        help="also filter the smallest N with a duplicate index already holding this many kept images "
        "(the end of a run that large; 1 worker, as the pool would be handed the filled index)",
    )
    args = parser.parse_args(argv)
    if args.quick and not args.prefill:
        args.prefill = 500
    sizes = [int(s) for s in (args.sizes or ("40,80" if args.quick else "2000,6000,12000")).split(",")]
    workers = args.workers or (1 if args.quick else 2)
    tmp = None if args.dir else tempfile.TemporaryDirectory(prefix="filter_memory_")
    root = Path(args.dir or tmp.name)
    t = time.perf_counter()
    write_images(root, max(sizes))
    made = time.perf_counter() - t
    results = {}
    for n in sizes:
        results[str(n)] = measure(subset(root, n), workers, root / f"n{n}.parquet")
        print(json.dumps({str(n): results[str(n)]}), flush=True)
    if args.prefill:
        n = min(sizes)
        r = measure(subset(root, n), 1, root / "prefill.parquet", args.prefill)
        results[f"{n}+index{args.prefill}"] = r
        print(json.dumps({f"{n}+index{args.prefill}": r}), flush=True)
    out = {
        "image_size": [SIDE, SIDE],
        "workers": workers,
        "sizes": sizes,
        "results": results,
        "peak_rss_mib_max": max(r["peak_rss_mib"] for r in results.values()),
        "write_images_s": round(made, 1),
        "cpu_count": os.cpu_count(),
        "quick": args.quick,
    }
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
