"""Measure a filter on the kept Derm-T2IM samples and noisy variants made from them.

Shared by ``benchmarks/filter_calibration.py`` and the tests. Every number is deterministic: the
split (:func:`filterlab.noise.split_samples`), the noise (seeded by file name) and the order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dermgen.filters.dedup import (
    FingerprintIndex,
    MemorisationScorer,
    fingerprint,
    iter_image_files,
    read_rgb,
)
from dermgen.filters.pipeline import FilterResult, ImageFilter, build_filter
from filterlab import noise
from filterlab.samples import sample_root

__all__ = [
    "Sample",
    "category_images",
    "evaluate_split",
    "load_samples",
    "sample_root",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One kept sample: its path relative to the samples folder and its RGB pixels."""

    name: str
    image: np.ndarray


def load_samples(
    root: str | os.PathLike[str] | None = None, limit_per_class: int | None = None
) -> tuple[list[Sample], list[Sample]]:
    """(calibration, test) samples of the kept set; ``limit_per_class`` keeps the first n of each folder."""
    base = Path(root) if root is not None else sample_root()
    paths = iter_image_files(base)
    cal, test = noise.split_samples(paths)

    def load(ps: Sequence[Path]) -> list[Sample]:
        out, seen = [], {}
        for p in ps:
            seen[p.parent.name] = seen.get(p.parent.name, 0) + 1
            if limit_per_class is not None and seen[p.parent.name] > limit_per_class:
                continue
            img = read_rgb(p)
            if img is None:
                raise ValueError(f"sample {p} cannot be decoded")
            out.append(Sample(p.relative_to(base).as_posix(), img))
        return out

    return load(cal), load(test)


def category_images(samples: Sequence[Sample], category: str, severity: str = "heavy") -> list[np.ndarray]:
    """Noisy variants of ``samples``; off-domain frames cycle through every kind of frame."""
    if category == "off_domain":
        kinds = noise.OFF_DOMAIN_KINDS
        return [
            noise.off_domain_frame(
                noise.rng_for("off_domain", s.name), s.image.shape[:2], kinds[i % len(kinds)], s.image
            )
            for i, s in enumerate(samples)
        ]
    return [noise.make_noisy(s.image, category, severity, s.name) for s in samples]


def _copies(samples: Sequence[Sample], tag: str) -> list[np.ndarray]:
    transforms = noise.COPY_TRANSFORMS
    return [
        noise.near_copy(s.image, noise.rng_for(tag, s.name), transforms[i % len(transforms)])
        for i, s in enumerate(samples)
    ]


def _stateless(flt: ImageFilter, images: Sequence[np.ndarray]) -> list[FilterResult]:
    out = []
    for img in images:
        flt.reset()  # each image on its own: variants of one sample are not duplicates of each other here
        out.append(flt.evaluate(img))
    flt.reset()
    return out


def _has(result: FilterResult, score: str) -> bool:
    return any(r.startswith(score + ">") or r.startswith(score + "<") for r in result.reasons)


def _rate(flags: Sequence[bool]) -> float:
    return round(float(np.mean(flags)), 4) if len(flags) else float("nan")


def evaluate_split(
    samples: Sequence[Sample],
    make_filter: Callable[[], ImageFilter] | None = None,
    mild: bool = True,
    categories: Sequence[str] = noise.CATEGORIES,
    mild_every: int = 1,
) -> dict:
    """Run the filter on clean samples, heavy (and mild) variants, duplicate and memorisation streams.

    Returns ``{"clean": {...}, "categories": {name: {n, drop_rate, recall, precision, reason}},
    "mild": {name: keep_rate}}``. ``drop_rate`` counts a drop for any reason; ``recall`` only drops
    with the category's own reason; ``precision`` is, among all images of this evaluation dropped with
    that reason, the fraction that belong to the category (clean + heavy + mild + off-domain pooled;
    duplicates and memorisation within their own streams). ``mild_every`` = n measures the mild
    variants of every n-th sample only (faster).
    """
    make_filter = make_filter or (lambda: build_filter("default"))
    flt = make_filter()
    clean = _stateless(flt, [s.image for s in samples])
    pooled: list[tuple[str, FilterResult]] = [("clean", r) for r in clean]
    heavy: dict[str, list[FilterResult]] = {}
    for cat in categories:
        heavy[cat] = _stateless(flt, category_images(samples, cat, "heavy"))
        pooled += [(cat, r) for r in heavy[cat]]
    mild_res: dict[str, list[FilterResult]] = {}
    if mild:
        for cat in categories:
            if cat in noise.MILD:
                mild_res[cat] = _stateless(flt, category_images(samples[::mild_every], cat, "mild"))
                pooled += [("mild_" + cat, r) for r in mild_res[cat]]

    out: dict = {
        "n_samples": len(samples),
        "clean": {"n": len(clean), "keep_rate": _rate([r.kept for r in clean])},
        "clean_drops": {},
        "categories": {},
        "mild": {cat: _rate([r.kept for r in rs]) for cat, rs in mild_res.items()},
    }
    for r, s in zip(clean, samples, strict=True):
        if not r.kept:
            out["clean_drops"][s.name] = r.reasons
    for cat, rs in heavy.items():
        reason = noise.EXPECTED_REASON[cat]
        flagged = [c for c, r in pooled if _has(r, reason)]
        out["categories"][cat] = {
            "n": len(rs),
            "reason": reason,
            "drop_rate": _rate([not r.kept for r in rs]),
            "recall": _rate([_has(r, reason) for r in rs]),
            "precision": _rate([c == cat for c in flagged]) if flagged else None,
        }

    # duplicates: a run where every sample is followed by a near copy of itself
    flt = make_filter()
    flt.reset()
    originals, copies = [], []
    for s, c in zip(samples, _copies(samples, "duplicate"), strict=True):
        originals.append(flt.evaluate(s.image))
        copies.append(flt.evaluate(c))
    flagged = [("dup", r) for r in copies if _has(r, "duplicate")] + [
        ("clean", r) for r in originals if _has(r, "duplicate")
    ]
    out["categories"]["duplicate"] = {
        "n": len(copies),
        "reason": "duplicate",
        "drop_rate": _rate([not r.kept for r in copies]),
        "recall": _rate([_has(r, "duplicate") for r in copies]),
        "precision": _rate([c == "dup" for c, _ in flagged]) if flagged else None,
    }

    # memorisation: every other sample is a reference image; copies of references must be dropped,
    # the samples that are not references must not be flagged
    refs, others = list(samples[::2]), list(samples[1::2])
    index = FingerprintIndex()
    for s in refs:
        index.add(fingerprint(s.image), s.name)
    flt = make_filter()
    flt.memorisation = MemorisationScorer(index=index)
    ref_copies = _stateless(flt, _copies(refs, "memorisation"))
    non_refs = _stateless(flt, [s.image for s in others])
    flagged = [("mem", r) for r in ref_copies if _has(r, "memorisation")] + [
        ("clean", r) for r in non_refs if _has(r, "memorisation")
    ]
    out["categories"]["memorisation"] = {
        "n": len(ref_copies),
        "reason": "memorisation",
        "drop_rate": _rate([not r.kept for r in ref_copies]),
        "recall": _rate([_has(r, "memorisation") for r in ref_copies]),
        "precision": _rate([c == "mem" for c, _ in flagged]) if flagged else None,
    }
    return out
