"""Memorisation reference index at scale: build time, cached load time and lookup time per image.

    python benchmarks/memorisation_index.py [--references 25000] [--queries 200] [--quick]

References are synthetic: procedural lesion-like images (skin tone, shading, random fine texture, a dark
irregular blob), written as 256 px JPEGs; ``--pool N`` draws only N distinct pictures and repeats them
(mirrored) to fill the set faster (a copy then counts as found when it matches any repeat of its picture).
The timed build is `load_reference_index` on that folder (content hash, decode, fingerprint, cache
write, one process, one thread); then the cached load; then per query image: the fingerprint, the
index search (ring shortlist over all references) and the full match (search + texture re-rank +
verification), for hard copies of indexed references (recall) and for new images (false matches).
``--tile K`` times the lookups against K repeats of the stored arrays (the search cost depends on the
number of entries, not on what they hold), so a 2,500-image set stands for 25,000 on a slow machine;
build and lookup times are also given in CPU time (``time.process_time`` / ``time.thread_time``, the
``*_cpu`` keys), which a shared machine inflates far less than wall time. Prints JSON (last line). ``--quick``: 300 references, 20 queries.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from dermgen.filters.dedup import FingerprintIndex, fingerprint, read_rgb  # noqa: E402
from dermgen.filters.reference_index import load_reference_index  # noqa: E402
from filterlab.copies import hard_copy  # noqa: E402

SIDE = 256


def synthetic(rng: np.random.Generator) -> np.ndarray:
    """A distinct lesion-like image: skin tone, smooth shading, random fine texture, a dark irregular blob."""
    base = rng.uniform((170, 110, 90), (235, 175, 160)).astype(np.float32)
    shade = cv2.resize(
        rng.normal(0, 1, (4, 4, 3)).astype(np.float32), (SIDE, SIDE), interpolation=cv2.INTER_CUBIC
    )
    texture = cv2.GaussianBlur(
        rng.normal(0, 1, (SIDE, SIDE)).astype(np.float32), (0, 0), rng.uniform(0.8, 2.0)
    )
    img = base + 8 * shade + rng.uniform(20, 40) * texture[..., None]
    blob = np.zeros((SIDE, SIDE), np.float32)
    centre = tuple(int(v) for v in rng.uniform(0.3, 0.7, 2) * SIDE)
    axes = tuple(int(v) for v in rng.uniform(0.06, 0.3, 2) * SIDE)
    cv2.ellipse(blob, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    edge = cv2.GaussianBlur(rng.normal(0, 1, (SIDE, SIDE)).astype(np.float32), (0, 0), 6)
    blob = cv2.GaussianBlur(np.clip(blob + 3 * edge, 0, 1), (0, 0), 2)
    img = img * (1 - blob[..., None] * rng.uniform(0.3, 0.7, 3).astype(np.float32))
    return np.clip(img, 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--references", type=int, default=25_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--tile", type=int, default=1, help="time lookups against K repeats of the index")
    ap.add_argument(
        "--pool", type=int, default=25_000, help="distinct pictures; the rest repeat them, mirrored"
    )
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.references, args.queries = 300, 20
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        refs, cache = Path(tmp) / "refs", Path(tmp) / "cache"
        os.environ["DERMGEN_CACHE"] = str(cache)
        t = time.perf_counter()
        pool = [synthetic(rng) for _ in range(min(args.pool, args.references))]
        for i in range(args.references):
            d = refs / f"{i // 1000:03d}"
            if i % 1000 == 0:
                d.mkdir(parents=True)
            img = pool[i % len(pool)]
            if i >= len(pool):  # a repeat: another encoding of the same picture (a copy of it)
                img = np.ascontiguousarray(img[::-1] if (i // len(pool)) % 2 else img[:, ::-1])
            cv2.imwrite(str(d / f"{i:06d}.jpg"), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        write_s = time.perf_counter() - t
        cpu = time.process_time()
        built = load_reference_index(refs)
        build_cpu_s = time.process_time() - cpu
        loaded = load_reference_index(refs)
        index = loaded.index
        labels = index.labels
        if args.tile > 1:  # lookups against K repeats of the stored arrays: the size of K times the set
            a = index.arrays(pre=True)
            index = FingerprintIndex.from_arrays(
                np.concatenate([a["rings"]] * args.tile),
                np.concatenate([a["grays"]] * args.tile),
                labels * args.tile,
                np.concatenate([a["pre"]] * args.tile),
                np.concatenate([a["thumbs"]] * args.tile),
                np.concatenate([a["owners"] + t * len(labels) for t in range(args.tile)]),
            )
        ms: dict[str, list[float]] = {}

        def timed(name, fn, *a):
            """fn(*a), its wall and CPU milliseconds recorded under ``name``."""
            w, c = time.perf_counter(), time.thread_time()
            out = fn(*a)
            ms.setdefault(name, []).append(1e3 * (time.perf_counter() - w))
            ms.setdefault(name + "_cpu", []).append(1e3 * (time.thread_time() - c))
            return out

        found, false = 0, 0
        for q in range(args.queries):
            j = int(rng.integers(len(labels)))
            copy = hard_copy(read_rgb(refs / labels[j]), rng, q % 8)
            same = {
                lb for lb in labels if int(Path(lb).stem) % len(pool) == int(Path(labels[j]).stem) % len(pool)
            }
            fp = timed("fingerprint", fingerprint, copy)
            timed("search", index.shortlist, fp)
            m = timed("match_copy", index.match, fp)
            found += m.similarity > 0.89 and m.label in same
            new = fingerprint(synthetic(rng))
            m = timed("match_new", index.match, new)
            false += m.similarity > 0.89
        cache_mb = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20

    def p(v: list[float], q: float) -> float:
        return round(float(np.percentile(v, q)), 2)

    out = {
        "references": len(built),
        "write_synthetic_s": round(write_s, 1),
        "index_build_s": round(built.seconds, 1),
        "index_build_ms_per_image": round(1e3 * built.seconds / max(1, len(built)), 2),
        "index_build_cpu_s": round(build_cpu_s, 1),
        "index_build_cpu_ms_per_image": round(1e3 * build_cpu_s / max(1, len(built)), 2),
        "index_build_cpu_s_per_25k": round(25_000 * build_cpu_s / max(1, len(built)), 1),
        "lookup_index_size": len(index),
        "cached_load_s": round(loaded.seconds, 2),
        "cache_mb": round(cache_mb, 1),
        "queries": args.queries,
        **{f"{name}_ms_p{q}": p(values, q) for name, values in ms.items() for q in (50, 95)},
        **{f"{name}_ms_mean": round(float(np.mean(values)), 2) for name, values in ms.items()},
        "copies_found": round(found / args.queries, 3),
        "new_images_matched": round(false / args.queries, 3),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
