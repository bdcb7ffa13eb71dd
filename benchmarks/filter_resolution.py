"""Does the default filter decide the same at every resolution, and does it drop real-like noise?

For each size (112, 256, 512, 768 px, and 112 px upscaled to 512) the script resizes every image and
runs the default filter (each image on its own; duplicates are not part of this measure) on:

- the kept Derm-T2IM samples (``--samples``, 120 x 512 px), split into calibration / held-out halves
  by ``filterlab.noise.split_samples``;
- the nine real discarded samples (``--discarded``, ~112 px crops), which belong to the calibration split;
- real-like noise (``benchmarks/realistic_noise.py``) made from each split's clean samples: heavy
  categories that must be dropped for their reason, kept-like mild marks that must stay kept;
- the heavy variants of ``filterlab.noise`` (the older synthetic categories).

Per size and split it prints keep / drop rates, the precision of ``ink`` (of the images dropped with
``ink``, the fraction that truly carry ink), the agreement of each size's decisions with the 512 px
decisions, and the largest ``smear`` over the images a person keeps next to the discarded frames' values
(what its bound was set from). The last line printed is one JSON object.

    python benchmarks/filter_resolution.py [--quick] [--samples DIR] [--discarded DIR]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import realistic_noise as rn  # noqa: E402

from dermgen.filters import build_filter  # noqa: E402
from dermgen.filters.dedup import iter_image_files, read_rgb  # noqa: E402
from filterlab import noise  # noqa: E402
from filterlab.samples import DISCARDED_DIR, sample_root  # noqa: E402

SIZES: tuple[str, ...] = ("112", "256", "512", "768", "112up512")
# the reason a person gives for each real discarded frame (see the folder's README)
DISCARDED_REASONS: dict[str, tuple[str, ...]] = {
    "d01": ("ink",),
    "d04": ("ink",),
    "d07": ("ink",),
    "d16": ("ink",),
    "d19": ("ink",),
    "d22": ("ink",),
    "d10": ("smear", "tint", "off_domain"),
    "d25": ("tint", "off_domain"),
    "d13": ("hair", "off_domain"),
}
INK_CATEGORIES = ("ink_band", "ink_loops", "ink_scribbles", "synthetic_ink")


def default_samples() -> Path:
    """The 120 kept samples: ``$DERMGEN_SAMPLES`` (e.g. the original PNGs), else the repository's copies."""
    return sample_root()


def default_discarded() -> Path:
    """The nine real discarded frames shipped in tests/assets."""
    return DISCARDED_DIR


def resize_to(img: np.ndarray, size: str) -> np.ndarray:
    """``img`` at one of :data:`SIZES` (square; area averaging down, bicubic up)."""

    def rs(x: np.ndarray, side: int) -> np.ndarray:
        if x.shape[:2] == (side, side):
            return x
        interp = cv2.INTER_AREA if side < max(x.shape[:2]) else cv2.INTER_CUBIC
        return cv2.resize(x, (side, side), interpolation=interp)

    if size == "112up512":
        return rs(rs(img, 112), 512)
    return rs(img, int(size))


class Item:
    """One test image: its group (clean, kept-like, a heavy category, discarded), expected reasons."""

    def __init__(self, name: str, group: str, image: np.ndarray, reasons: tuple[str, ...] = ()) -> None:
        self.name, self.group, self.image, self.reasons = name, group, image, reasons

    @property
    def noisy(self) -> bool:
        return bool(self.reasons)


def build_items(
    samples: Sequence[tuple[str, np.ndarray]], discarded: Sequence[tuple[str, np.ndarray]], every: int = 1
) -> list[Item]:
    """Clean samples, their real-like / kept-like / synthetic heavy variants, and the discarded frames."""
    items = [Item(n, "clean", img) for n, img in samples]
    for i, (n, img) in enumerate(samples):
        if i % every:
            continue
        for cat, (_, reasons) in rn.REAL_LIKE.items():
            items.append(Item(n, cat, rn.make_real_like(img, cat, n), reasons))
        for cat in rn.KEPT_LIKE:
            items.append(Item(n, cat, rn.make_real_like(img, cat, n)))
        for cat in ("ink", "blur", "hair", "ruler", "tint"):
            group = "synthetic_" + cat
            items.append(
                Item(n, group, noise.make_noisy(img, cat, "heavy", n), (noise.EXPECTED_REASON[cat],))
            )
    items += [Item(n, "discarded", img, DISCARDED_REASONS.get(n, ("ink",))) for n, img in discarded]
    return items


def _has(reasons: Sequence[str], score: str) -> bool:
    return any(r.startswith(score + ">") or r.startswith(score + "<") for r in reasons)


# scores whose largest value on the images a person keeps (clean and kept-like) is printed per size
WATCHED_SCORES: tuple[str, ...] = ("smear",)


def decide(
    items: Sequence[Item], size: str, make_filter: Callable = build_filter, scores: list[dict] | None = None
) -> list[list[str]]:
    """The reasons of every item at ``size`` (empty = kept); ``scores`` collects each item's
    :data:`WATCHED_SCORES` when given."""
    flt = make_filter("default")
    out = []
    for it in items:
        flt.reset()
        res = flt.evaluate(resize_to(it.image, size))
        out.append(res.reasons)
        if scores is not None:
            scores.append({k: res.scores.get(k) for k in WATCHED_SCORES})
    return out


def kept_maxima(items: Sequence[Item], scores: Sequence[dict]) -> dict[str, float | None]:
    """The largest value of each watched score over the clean and kept-like items."""
    idx = [i for i, it in enumerate(items) if it.group == "clean" or it.group in rn.KEPT_LIKE]
    out: dict[str, float | None] = {}
    for k in WATCHED_SCORES:
        vals = [scores[i][k] for i in idx if scores[i][k] is not None]
        out[k] = round(float(max(vals)), 6) if vals else None
    return out


def _rate(flags: Sequence[bool]) -> float | None:
    return round(float(np.mean(flags)), 4) if len(flags) else None


def summarise(items: Sequence[Item], reasons: Sequence[list[str]]) -> dict:
    """Keep / drop rates per group, precision of ``ink``, and the headline rates."""
    groups: dict[str, dict] = {}
    for g in dict.fromkeys(it.group for it in items):
        idx = [i for i, it in enumerate(items) if it.group == g]
        exp = items[idx[0]].reasons
        groups[g] = {
            "n": len(idx),
            ("drop_rate" if exp else "keep_rate"): _rate([bool(reasons[i]) == bool(exp) for i in idx]),
        }
        if exp:
            # each item's own reasons: the discarded frames each have theirs
            groups[g]["reason_rate"] = _rate(
                [any(_has(reasons[i], r) for r in items[i].reasons) for i in idx]
            )
    ink_flagged = [it for it, rs in zip(items, reasons, strict=True) if _has(rs, "ink")]
    ink_truth = [
        it.group in INK_CATEGORIES or (it.group == "discarded" and "ink" in it.reasons) for it in ink_flagged
    ]
    real_like = [i for i, it in enumerate(items) if it.group in rn.REAL_LIKE]
    kept_like = [i for i, it in enumerate(items) if it.group == "clean" or it.group in rn.KEPT_LIKE]
    return {
        "clean_kept": groups.get("clean", {}).get("keep_rate"),
        "kept_like_kept": _rate([not reasons[i] for i in kept_like]),
        "real_like_dropped": _rate([bool(reasons[i]) for i in real_like]),
        "real_like_reason": _rate([any(_has(reasons[i], r) for r in items[i].reasons) for i in real_like]),
        "ink_precision": _rate(ink_truth),
        "groups": groups,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 samples per class, 2 sizes")
    parser.add_argument("--samples", default=str(default_samples()))
    parser.add_argument("--discarded", default=str(default_discarded()))
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)

    paths = iter_image_files(args.samples)
    cal_paths, test_paths = noise.split_samples(paths)
    if args.quick:  # two of each end of each split (benign first, malignant last when both exist)
        cal_paths, test_paths = cal_paths[:2] + cal_paths[-2:], test_paths[:2] + test_paths[-2:]
    root = Path(args.samples)

    def load(ps: Sequence[Path]) -> list[tuple[str, np.ndarray]]:
        return [(p.relative_to(root).as_posix(), read_rgb(p)) for p in ps]

    discarded = [(p.stem, read_rgb(p)) for p in iter_image_files(args.discarded)]
    splits = {
        "calibration": build_items(load(cal_paths), discarded),
        "heldout": build_items(load(test_paths), []),
    }
    sizes = ("112", "512") if args.quick else SIZES
    result: dict = {"sizes": list(sizes), "splits": {}}
    for split, items in splits.items():
        watched: dict[str, list[dict]] = {size: [] for size in sizes}
        per_size = {size: decide(items, size, scores=watched[size]) for size in sizes}
        base = per_size["512"]
        out = {}
        for size in sizes:
            s = summarise(items, per_size[size])
            s["agreement_with_512"] = _rate(
                [bool(a) == bool(b) for a, b in zip(per_size[size], base, strict=True)]
            )
            disc = [
                (it.name, rs) for it, rs in zip(items, per_size[size], strict=True) if it.group == "discarded"
            ]
            if disc:
                s["discarded"] = {n: rs for n, rs in disc}
                s["discarded_scores"] = {
                    it.name: sc
                    for it, sc in zip(items, watched[size], strict=True)
                    if it.group == "discarded"
                }
            s["kept_max"] = kept_maxima(items, watched[size])
            out[size] = s
            print(
                f"{split:11s} {size:>8s}  clean kept {s['clean_kept']}  kept-like kept {s['kept_like_kept']}  "
                f"real-like dropped {s['real_like_dropped']} (reason {s['real_like_reason']})  "
                f"ink precision {s['ink_precision']}  agreement {s['agreement_with_512']}",
                flush=True,
            )
            print(f"{'':21s}max over clean + kept-like: {s['kept_max']}", flush=True)
            if disc:
                print(f"{'':21s}discarded: " + ", ".join(f"{n} {rs or 'KEPT'}" for n, rs in disc), flush=True)
                print(f"{'':21s}discarded scores: {s['discarded_scores']}", flush=True)
        result["splits"][split] = out
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
