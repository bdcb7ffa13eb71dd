"""Fit the filter thresholds to a person's keep/drop labels, and read/write filter profiles.

A labels file is JSON: either a list of ``{"path": ..., "kept": true|false}`` objects (``"image"`` is
accepted for ``"path"``, ``"label": "keep"|"drop"`` for ``"kept"``; an optional ``"scores"`` mapping
skips re-scoring), an object ``{"labels": [...]}`` holding such a list, or a mapping path -> keep/drop.
Relative paths are resolved against the labels file's folder, or against the run when the object names
one (``"run"``: the labels that ``dermgen report`` downloads, whose paths are image keys in the run and
whose rows carry the run's scores, so no image is read). A label without a path needs its scores.

:func:`fit_thresholds` starts from a config (the defaults) and moves one bound at a time to the value
that agrees best with the labels (best-improvement ascent over the midpoints between observed scores),
keeping a bound where it is when no move helps; it climbs from the start config and from all fitted
bounds off, and keeps the better. The duplicate, memorisation and CLIP bounds
are left alone (they depend on a run or a model, not on one image's pixels).

A profile is YAML: ``{"dermgen_filter_profile": 1, "thresholds": {field: value|null}, ...}``; the
``thresholds`` are :class:`~dermgen.filters.rule.FilterConfig` fields. :func:`load_profile` reads one
back and ``build_filter("path/to/profile.yaml")`` uses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dermgen.filters.rule import BOUNDS, Bound, FilterConfig, FilterConfigError, apply_rule

__all__ = [
    "MIN_LABELS",
    "MIN_PER_CLASS",
    "CalibrationError",
    "Fit",
    "Label",
    "agreement_report",
    "fit_thresholds",
    "is_profile_path",
    "load_labels",
    "load_profile",
    "write_profile",
]

log = logging.getLogger(__name__)

MIN_LABELS = 20  # fewer labels than this cannot fit a dozen thresholds
MIN_PER_CLASS = 5  # and each side (kept, dropped) needs a few examples
PROFILE_VERSION = 1
FIT_SKIP = {"duplicate", "memorisation", "clip"}  # bounds that depend on a run or a model
PASSES = 3


class CalibrationError(FilterConfigError):
    """Labels that cannot be read or are too few to fit thresholds."""


@dataclass
class Label:
    """One labelled image: where it is, the person's decision, and its scores once computed."""

    path: str
    kept: bool
    scores: dict[str, float | None] | None = None


def _as_kept(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("keep", "kept", "true"):
        return True
    if isinstance(value, str) and value.lower() in ("drop", "dropped", "false"):
        return False
    raise CalibrationError(f"{where}: expected kept true/false or label 'keep'/'drop', got {value!r}")


def load_labels(path: str | os.PathLike[str]) -> list[Label]:
    """Read a labels file (see the module docstring); raise :class:`CalibrationError` naming the problem."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"cannot read labels file {p}: {exc}") from None
    base: str | Path = p.parent
    if isinstance(data, dict) and "labels" in data:
        run = data.get("run")
        if isinstance(run, str) and run.startswith("s3://"):
            base = run.rstrip("/") + "/"
        elif isinstance(run, str) and Path(run).is_dir():
            base = Path(run)
        data = data["labels"]
    items: list[tuple[Any, Any, Any]] = []
    if isinstance(data, dict):
        items = [(k, v, None) for k, v in data.items()]
    elif isinstance(data, list):
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise CalibrationError(f"{p}: label {i} must be an object with path and kept, got {row!r}")
            where = row.get("path") or row.get("image")
            kept = row.get("kept", row.get("label"))
            if where is None and row.get("scores") and row.get("sample_id"):
                where = row["sample_id"]  # an image with no file, labelled with its scores
            if where is None or kept is None:
                raise CalibrationError(f"{p}: label {i} needs 'path' (or 'image') and 'kept' (or 'label')")
            items.append((where, kept, row.get("scores")))
    else:
        raise CalibrationError(f"{p}: expected a list of labels or a mapping path -> keep/drop")
    out = []
    for where, kept, scores in items:
        full: str | Path = Path(str(where))
        if str(where).startswith("s3://"):
            full = str(where)
        elif not Path(str(where)).is_absolute():
            full = f"{base}{where}" if isinstance(base, str) else base / str(where)
        if scores is not None and not isinstance(scores, Mapping):
            raise CalibrationError(f"{p}: {where}: scores must be a mapping name -> number")
        scores = {k: v for k, v in (scores or {}).items() if v is not None} or None  # all null: re-score
        out.append(Label(str(full), _as_kept(kept, f"{p}: {where}"), scores))
    return out


def check_enough(labels: Sequence[Label]) -> None:
    """Refuse to fit on too few labels, saying how many there are and how many are needed."""
    kept = sum(lb.kept for lb in labels)
    dropped = len(labels) - kept
    if len(labels) < MIN_LABELS or kept < MIN_PER_CLASS or dropped < MIN_PER_CLASS:
        raise CalibrationError(
            f"too few labels to fit thresholds: {len(labels)} ({kept} kept, {dropped} dropped); need at "
            f"least {MIN_LABELS} with at least {MIN_PER_CLASS} kept and {MIN_PER_CLASS} dropped. "
            "Label more images in the report and download the labels again."
        )


def score_labels(labels: Sequence[Label]) -> None:
    """Fill in the scores of labels that have none (default scorers, each image on its own)."""
    from dermgen.filters.pipeline import build_filter

    flt = build_filter("default")
    for lb in labels:
        if lb.scores is not None:
            continue
        try:
            image = _read_label_image(lb.path)
        except (OSError, KeyError):
            image = None
        if image is None:
            raise CalibrationError(f"labelled image {lb.path} is missing or cannot be decoded")
        flt.reset()
        lb.scores = flt.score(image).scores


def _read_label_image(path: str):
    """A labelled image from a local path or an s3:// URL, as RGB (None when it cannot be decoded)."""
    from dermgen.filters.dedup import decode_rgb, read_rgb

    if not path.startswith("s3://"):
        return read_rgb(path)
    from dermgen.store import open_store

    folder, _, key = path.rpartition("/")
    return decode_rgb(open_store(folder).get(key))


def _decisions(config: FilterConfig, labels: Sequence[Label]) -> list[bool]:
    return [not apply_rule(config, lb.scores or {}) for lb in labels]


def _agreement(config: FilterConfig, labels: Sequence[Label]) -> float:
    return sum(d == lb.kept for d, lb in zip(_decisions(config, labels), labels, strict=True)) / len(labels)


def _candidates(bound: Bound, labels: Sequence[Label]) -> list[float | None]:
    values = sorted(
        {
            float(v)
            for lb in labels
            if (v := (lb.scores or {}).get(bound.score)) is not None and not math.isnan(float(v))
        }
    )
    mids = [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)]
    lo, hi = (-1.0, 1.0) if bound.field == "clip_min" else (0.0, 1.0)
    return [None, *(min(hi, max(lo, round(m, 4))) for m in mids)]


@dataclass
class Fit:
    """The fitted config and the agreement with the labels before and after."""

    before: FilterConfig
    after: FilterConfig
    agreement_before: float
    agreement_after: float
    n: int


def fit_thresholds(labels: Sequence[Label], start: FilterConfig | None = None) -> Fit:
    """Move one bound at a time to the value that agrees best with the labels; see the module docstring.

    Ties keep the bound closest to its current value, so a bound the labels say nothing about stays.
    """
    check_enough(labels)
    score_labels(labels)
    start = start or FilterConfig()
    # one bound at a time can get stuck where two bounds drop the same images (neither move alone
    # helps): climb from the start and from every fitted bound off, and keep the better (ties: start)
    released = start.model_copy(update={b.field: None for b in BOUNDS if b.score not in FIT_SKIP})
    best_fit = None
    for origin in (start, released):
        config, agreement = _ascend(origin, labels)
        if best_fit is None or agreement > best_fit[1] + 1e-12:
            best_fit = (config, agreement)
    config, best = best_fit
    for bound in BOUNDS:  # a bound the labels say nothing about keeps its start value
        if bound.score in FIT_SKIP or getattr(config, bound.field) == getattr(start, bound.field):
            continue
        trial = config.model_copy(update={bound.field: getattr(start, bound.field)})
        if _agreement(trial, labels) >= best - 1e-12:
            config = trial
    return Fit(start, config, _agreement(start, labels), best, len(labels))


def _ascend(config: FilterConfig, labels: Sequence[Label]) -> tuple[FilterConfig, float]:
    """Best-improvement ascent from ``config``: each step makes the one bound move (of all bounds) that
    raises agreement most; ties go to the move that drops fewer images the person kept, then to the
    value closest to the current one. Stops when no move raises agreement."""
    best = _agreement(config, labels)
    for _ in range(PASSES * len(BOUNDS)):
        move: tuple[float, int, float, str, float | None] | None = None
        for bound in BOUNDS:
            if bound.score in FIT_SKIP:
                continue
            current = getattr(config, bound.field)
            for value in _candidates(bound, labels):
                if value == current:
                    continue
                trial = config.model_copy(update={bound.field: value})
                decisions = _decisions(trial, labels)
                agree = sum(d == lb.kept for d, lb in zip(decisions, labels, strict=True)) / len(labels)
                if agree <= best + 1e-12:
                    continue
                false_drops = sum(lb.kept and not d for d, lb in zip(decisions, labels, strict=True))
                key = (agree, -false_drops, -_distance(value, current), bound.field, value)
                if move is None or key[:3] > move[:3]:
                    move = key
        if move is None:
            break
        best = move[0]
        config = config.model_copy(update={move[3]: move[4]})
    return config, best


def _distance(value: float | None, current: float | None) -> float:
    if value is None or current is None:
        return 0.0 if value is current else math.inf
    return abs(value - current)


def agreement_report(fit: Fit, labels: Sequence[Label]) -> list[dict[str, Any]]:
    """Per score: how many images its bound drops before/after and how many of those the person dropped."""
    rows = []
    for bound in BOUNDS:
        if bound.score in FIT_SKIP:
            continue
        row: dict[str, Any] = {"bound": bound.field}
        for tag, cfg in (("before", fit.before), ("after", fit.after)):
            only = FilterConfig.disabled().model_copy(update={bound.field: getattr(cfg, bound.field)})
            flagged = [lb for lb, d in zip(labels, _decisions(only, labels), strict=True) if not d]
            row[f"value_{tag}"] = getattr(cfg, bound.field)
            row[f"dropped_{tag}"] = len(flagged)
            row[f"agree_{tag}"] = sum(not lb.kept for lb in flagged)
        rows.append(row)
    return rows


def format_report(fit: Fit, labels: Sequence[Label]) -> str:
    """A table a person can read: agreement overall and, per bound, drops and how many the person agrees with."""
    lines = [
        f"labels: {fit.n} ({sum(lb.kept for lb in labels)} kept, {sum(not lb.kept for lb in labels)} dropped)",
        f"agreement with the labels: before {fit.agreement_before:.3f}, after {fit.agreement_after:.3f}",
        f"{'bound':22s} {'before':>8s} {'drops':>6s} {'agree':>6s}   {'after':>8s} {'drops':>6s} {'agree':>6s}",
    ]

    def fmt(v: float | None) -> str:
        return "off" if v is None else f"{v:.4g}"

    for r in agreement_report(fit, labels):
        lines.append(
            f"{r['bound']:22s} {fmt(r['value_before']):>8s} {r['dropped_before']:6d} {r['agree_before']:6d}"
            f"   {fmt(r['value_after']):>8s} {r['dropped_after']:6d} {r['agree_after']:6d}"
        )
    return "\n".join(lines)


def write_profile(
    config: FilterConfig,
    path: str | os.PathLike[str],
    *,
    fit: Fit | None = None,
    labels_file: str | None = None,
) -> Path:
    """Write ``config`` as a profile YAML (with where it came from when ``fit`` is given)."""
    import yaml

    data: dict[str, Any] = {
        "dermgen_filter_profile": PROFILE_VERSION,
        "thresholds": {b.field: getattr(config, b.field) for b in BOUNDS},
    }
    if fit is not None:
        data["fitted"] = {
            "labels": fit.n,
            "agreement_before": round(fit.agreement_before, 4),
            "agreement_after": round(fit.agreement_after, 4),
        }
        if labels_file is not None:
            data["fitted"]["labels_sha256"] = hashlib.sha256(Path(labels_file).read_bytes()).hexdigest()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def is_profile_path(spec: str) -> bool:
    """True when a filter spec names a profile file (``*.yaml`` / ``*.yml``) rather than a preset."""
    return str(spec).lower().endswith((".yaml", ".yml"))


def load_profile(path: str | os.PathLike[str]) -> FilterConfig:
    """The FilterConfig of a profile YAML; :class:`FilterConfigError` naming the file and the problem."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise FilterConfigError(f"cannot read filter profile {p}: {exc}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("thresholds"), Mapping):
        raise FilterConfigError(
            f"filter profile {p}: expected a mapping with 'thresholds' (field -> number|null)"
        )
    version = data.get("dermgen_filter_profile")
    if version != PROFILE_VERSION:
        raise FilterConfigError(
            f"filter profile {p}: dermgen_filter_profile = {version!r}, expected {PROFILE_VERSION}"
        )
    try:
        return FilterConfig.parse(data["thresholds"])
    except FilterConfigError as exc:
        raise FilterConfigError(f"filter profile {p}: {exc}") from None


def build_parser():
    """The parser of ``dermgen filter calibrate LABELS.json [--start PROFILE.yaml] --output PROFILE.yaml``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="dermgen filter calibrate",
        description="Fit the filter thresholds to a person's keep/drop labels and write a profile.",
        epilog="example:\n  dermgen filter calibrate labels.json --output profile.yaml\n"
        "  dermgen generate --filter profile.yaml ...\n"
        f"needs at least {MIN_LABELS} labels, {MIN_PER_CLASS} kept and {MIN_PER_CLASS} dropped.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("labels", help="labels JSON (downloaded from `dermgen report`, or written by hand)")
    parser.add_argument("--output", required=True, help="profile YAML to write")
    parser.add_argument(
        "--start", default=None, help="profile to start from (default: the default thresholds)"
    )
    parser.set_defaults(func=cmd_calibrate)
    return parser


def cmd_calibrate(args) -> int:
    """Fit, print agreement before and after, write the profile; bad labels raise FilterConfigError (exit 2)."""
    labels = load_labels(args.labels)
    start = load_profile(args.start) if args.start else FilterConfig()
    fit = fit_thresholds(labels, start)
    print(format_report(fit, labels))
    out = write_profile(fit.after, args.output, fit=fit, labels_file=args.labels)
    print(f"wrote {out}")
    return 0
