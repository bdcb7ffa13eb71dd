"""The filter stage: scorers turn each image into scores, a rule turns scores into keep/drop + reasons.

Public API::

    from dermgen.filters import build_filter
    flt = build_filter("default", overrides={"ink": 0.05}, reference_dir=None, clip_model=None)
    res = flt.evaluate(rgb_uint8_image, overrides={"lesion_area": None})
    res.kept, res.reasons, res.scores

Heavy optional imports (torch/transformers for CLIP) happen only where used.
"""

from dermgen.filters.base import ImageView, Scorer
from dermgen.filters.names import SCORE_NAMES
from dermgen.filters.pipeline import (
    PRESETS,
    FilterResult,
    ImageFilter,
    ScoredImage,
    build_filter,
    default_scorers,
)
from dermgen.filters.rule import (
    BOUNDS,
    DEFAULT_THRESHOLDS,
    FilterConfig,
    FilterConfigError,
    apply_rule,
    override_keys,
    resolve_overrides,
)

__all__ = [
    "BOUNDS",
    "DEFAULT_THRESHOLDS",
    "PRESETS",
    "SCORE_NAMES",
    "FilterConfig",
    "FilterConfigError",
    "FilterResult",
    "ImageFilter",
    "ImageView",
    "ScoredImage",
    "Scorer",
    "apply_rule",
    "build_filter",
    "default_scorers",
    "filter_folder",
    "filter_images",
    "override_keys",
    "resolve_overrides",
]


def __getattr__(name: str):  # standalone pulls in pyarrow: import it on first use
    if name in ("filter_folder", "filter_images"):
        from dermgen.filters import standalone

        return getattr(standalone, name)
    raise AttributeError(f"module 'dermgen.filters' has no attribute {name!r}")
