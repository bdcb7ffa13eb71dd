"""The effective filter of a run or a `dermgen filter` call, as a JSON-able record, and its changes.

The record says what decided keep/drop: the spec (a preset, or a profile with the SHA-256 of its
content), every threshold after the profile and the overrides, the scorers and their version, the
SHA-256 of the reference set (memorisation) and the CLIP model. A run records it in run.json; a resume
whose record differs is refused (:func:`filter_changes` names what changed).

Bump :data:`SCORERS_VERSION` whenever a scorer's measure changes (same image, different score).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from dermgen.filters.names import SCORE_NAMES
from dermgen.filters.rule import BOUNDS, FilterConfig, resolve_overrides

__all__ = ["SCORERS_VERSION", "effective_filter", "filter_changes", "reference_sha256"]

SCORERS_VERSION = 4  # the measure of every scorer; bump when a score of the same image changes
# (2: copy detection with the 32 px pre-scan, duplicate and memorisation scores moved a little;
# 3: thumbnail shortlist and verification started from the 64 px placements; 4: central squares of
# non-square images, and the duplicate score matched both ways: an original after its crop scores high)


def reference_sha256(reference_dir: str | os.PathLike[str] | None) -> str | None:
    """One hash over the reference images (relative path + content, sorted); None without references."""
    if reference_dir is None:
        return None
    from dermgen.filters.dedup import iter_image_files
    from dermgen.hashing import sha256_file

    root = Path(reference_dir)
    h = hashlib.sha256()
    for f in iter_image_files(root):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def effective_filter(
    spec: str,
    overrides: dict[str, Any] | None = None,
    reference_dir: str | os.PathLike[str] | None = None,
    clip_model: str | os.PathLike[str] | None = None,
    *,
    config: FilterConfig | None = None,
) -> dict[str, Any]:
    """The record of the filter ``spec`` (preset or profile path) with ``overrides`` etc. (module doc).

    ``config``: the thresholds already resolved (skips reading the profile again).
    """
    from dermgen.filters.calibrate import is_profile_path, load_profile

    record: dict[str, Any] = {"spec": "profile" if is_profile_path(spec) else spec}
    if spec == "none":
        return record
    if is_profile_path(spec):
        record["profile"] = str(spec)
        record["profile_sha256"] = hashlib.sha256(Path(spec).read_bytes()).hexdigest()
    if config is None:
        config = load_profile(spec) if is_profile_path(spec) else FilterConfig()
        if overrides:
            config = config.model_copy(update=resolve_overrides(overrides))
    record["overrides"] = dict(sorted((overrides or {}).items()))
    record["thresholds"] = {b.field: getattr(config, b.field) for b in BOUNDS}
    record["scorers"] = [n for n in SCORE_NAMES if n != "clip" or clip_model is not None]
    record["scorers_version"] = SCORERS_VERSION
    record["reference_dir"] = None if reference_dir is None else str(reference_dir)
    record["reference_sha256"] = reference_sha256(reference_dir)
    record["clip_model"] = None if clip_model is None else str(clip_model)
    return record


def filter_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two records, one line per change (``thresholds.ink_max: 0.02 -> 0.1``)."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            changes += [
                f"{key}.{k}: {a.get(k)!r} -> {b.get(k)!r}"
                for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k)
            ]
        else:
            changes.append(f"{key}: {a!r} -> {b!r}")
    return changes
