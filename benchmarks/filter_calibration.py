"""Calibrate and measure the default filter on the 120 kept Derm-T2IM samples.

1. On the CALIBRATION split (half of the samples, by sha256 of the file name) it prints each score's
   range on clean images and on heavy / mild noisy variants, and the threshold the calibration rule
   suggests: halfway between the clean extreme and the 10th percentile of the heavy category (the
   target is to drop >= 90% of heavy noise), or the clean extreme itself if they overlap.
   These suggestions are what the constants in ``dermgen/filters/rule.py`` were set from.
2. On the held-out TEST split it measures the DEFAULT filter (the constants in the code): per noise
   category drop rate, recall (dropped with the category's own reason) and precision.
3. It measures the clean keep rate on all samples.

The last line printed is one JSON object with the measurements.

    python benchmarks/filter_calibration.py [--quick] [--samples DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dermgen.filters import FilterConfig, ImageFilter, ImageView, build_filter  # noqa: E402
from dermgen.filters.color import TintScorer  # noqa: E402
from dermgen.filters.dedup import FingerprintIndex, fingerprint  # noqa: E402
from dermgen.filters.rule import BOUNDS  # noqa: E402
from filterlab import noise  # noqa: E402
from filterlab.evaluation import category_images, evaluate_split, load_samples  # noqa: E402
from filterlab.samples import sample_root  # noqa: E402


def _scores(images: list[np.ndarray]) -> dict[str, np.ndarray]:
    flt = ImageFilter(FilterConfig.disabled(), duplicates=False)
    rows = [flt.score(img).scores for img in images]
    return {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0] if rows[0][k] is not None}


def _round(x: float) -> float:
    return float(f"{x:.2g}")


def calibrate(samples) -> dict:
    """Score ranges on the calibration split and the thresholds the calibration rule suggests."""
    clean = _scores([s.image for s in samples])
    heavy = {c: _scores(category_images(samples, c, "heavy")) for c in noise.CATEGORIES}
    mild = {c: _scores(category_images(samples, c, "mild")) for c in noise.CATEGORIES if c in noise.MILD}
    table = {}
    suggested: dict[str, float | None] = {}
    for b in BOUNDS:
        s = b.score
        if s not in clean:
            continue
        cats = [c for c, r in noise.EXPECTED_REASON.items() if r == s]
        h = np.concatenate([heavy[c][s] for c in cats]) if cats else np.array([])
        row = {"clean_min": float(clean[s].min()), "clean_max": float(clean[s].max())}
        if len(h):
            row.update(heavy_p10=float(np.percentile(h, 10)), heavy_p90=float(np.percentile(h, 90)))
        for c in cats:
            if c in mild:
                row[f"mild_{c}_max"] = float(mild[c][s].max())
                row[f"mild_{c}_min"] = float(mild[c][s].min())
        if b.direction == "max" and len(h):
            lo, hi = row["clean_max"], row["heavy_p10"]
            t = (lo + hi) / 2 if hi > lo else lo
        elif b.direction == "min" and len(h):
            lo, hi = row["heavy_p90"], row["clean_min"]
            t = (lo + hi) / 2 if hi > lo else hi
        elif s == "lesion_area" and b.direction == "min":
            t = row["clean_min"] / 2
        elif s == "lesion_offcentre":
            t = (row["clean_max"] + 1.0) / 2
        else:
            continue
        suggested[b.field] = _round(t)
        table[b.field] = row
    # copy similarity: distinct clean samples against each other vs near copies of them
    index = FingerprintIndex()
    fps = [fingerprint(s.image) for s in samples]
    for fp in fps:
        index.add(fp)
    distinct = []
    for i, fp in enumerate(fps):
        others = FingerprintIndex()
        for j, other in enumerate(fps):
            if j != i:
                others.add(other)
        distinct.append(others.similarity(fp))
    copies = [
        index.similarity(fingerprint(noise.near_copy(s.image, noise.rng_for("cal-copy", s.name), t)))
        for s in samples
        for t in noise.COPY_TRANSFORMS
    ]
    row = {
        "clean_max": float(np.max(distinct)),
        "copies_min": float(np.min(copies)),
        "copies_p1": float(np.percentile(copies, 1)),
    }
    t = _round((row["clean_max"] + row["copies_p1"]) / 2)  # copies must go >= 99%: their 1st percentile
    table["duplicate_max"] = table["memorisation_max"] = row
    suggested["duplicate_max"] = suggested["memorisation_max"] = t
    # the tint reference distribution (TINT_MEAN / TINT_COV in color.py)
    ab = np.array([TintScorer().median_ab(ImageView(s.image)) for s in samples])
    tint_fit = {"mean": ab.mean(0).round(3).tolist(), "cov": np.cov(ab.T).round(2).tolist()}
    return {"table": table, "suggested": suggested, "tint_fit": tint_fit}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run on 3 samples per class")
    parser.add_argument(
        "--samples",
        default=None,
        help="folder of kept samples (benign/, malignant/ PNGs; default: $DERMGEN_SAMPLES or the repository's "
        "test assets)",
    )
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    t0 = time.perf_counter()
    limit = 3 if args.quick else None
    cal, test = load_samples(args.samples or sample_root(), limit_per_class=limit)

    if not args.quick:
        cal_out = calibrate(cal)
        print(f"calibration split: {len(cal)} samples")
        for field, row in cal_out["table"].items():
            stats = " ".join(f"{k}={v:.3f}" for k, v in row.items())
            print(f"  {field:22s} suggested={cal_out['suggested'].get(field)!s:6s} {stats}")
        print(f"  tint fit: {cal_out['tint_fit']}")
        print("  current defaults:", FilterConfig().thresholds())

    held = evaluate_split(test, mild=not args.quick)
    everything = cal + test
    flt = build_filter("default")
    kept = []
    for s in everything:
        flt.reset()
        kept.append(flt.evaluate(s.image).kept)
    result = {
        "split": {"calibration": len(cal), "test": len(test)},
        "clean_keep_rate_all": round(float(np.mean(kept)), 4),
        "clean_n_all": len(everything),
        "heldout_clean_keep_rate": held["clean"]["keep_rate"],
        "heldout": held["categories"],
        "heldout_mild_keep_rate": held["mild"],
        "clean_drops_heldout": held["clean_drops"],
        "quick": args.quick,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
