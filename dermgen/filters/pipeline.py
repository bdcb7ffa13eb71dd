"""The image filter: scorers turn an image into scores, the rule turns scores into keep/drop + reasons."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dermgen.filters.base import ImageView, Scorer
from dermgen.filters.color import ClippedScorer, ContrastScorer, InkScorer, TintScorer
from dermgen.filters.dedup import Fingerprint, MemorisationScorer, fingerprint
from dermgen.filters.domain import OffDomainScorer
from dermgen.filters.hair import HairScorer
from dermgen.filters.lesion import LesionScorer
from dermgen.filters.names import SCORE_NAMES
from dermgen.filters.rule import FilterConfig, FilterConfigError, apply_rule, resolve_overrides
from dermgen.filters.ruler import RulerScorer
from dermgen.filters.run_index import DuplicateCandidate, DuplicateLogClient, RunIndex
from dermgen.filters.sharpness import BlurScorer
from dermgen.filters.skintone import SkinToneScorer
from dermgen.filters.smear import SmearScorer
from dermgen.skintone import skin_tone_reasons

__all__ = ["PRESETS", "FilterResult", "ImageFilter", "ScoredImage", "build_filter", "default_scorers"]

log = logging.getLogger(__name__)

PRESETS = ("default", "none")


@dataclass(frozen=True)
class FilterResult:
    """The decision for one image: kept, the violated bounds (``["ink>0.025", ...]``) and every score.

    ``scores`` has every name of :data:`SCORE_NAMES` as key; None where not computed.
    """

    kept: bool
    reasons: list[str]
    scores: dict[str, float | None]


@dataclass
class ScoredImage:
    """The stateless half of an evaluation: scores (``duplicate`` still None) and the fingerprint."""

    scores: dict[str, float | None]
    fingerprint: Fingerprint | None = field(default=None, repr=False)


def default_scorers() -> list[Scorer]:
    """The stateless scorers of the default filter (duplicates, memorisation and CLIP are added apart)."""
    return [
        InkScorer(),
        BlurScorer(),
        ContrastScorer(),
        TintScorer(),
        SmearScorer(),
        ClippedScorer(),
        HairScorer(),
        RulerScorer(),
        LesionScorer(),
        OffDomainScorer(),
        SkinToneScorer(),  # after LesionScorer: reuses its cached lesion mask
    ]


class ImageFilter:
    """Scores images and keeps or drops them by the thresholds of a :class:`FilterConfig`.

    Stateless scorers run in :meth:`score` (safe to call from worker processes); :meth:`decide` (one
    image) and :meth:`decide_many` (a batch, one round trip to a shared run index) add the duplicate score
    against the run's images kept so far (:attr:`run_index`) and apply the rule, and :meth:`evaluate`
    does both. ``enabled=False`` makes a filter that keeps everything and computes nothing.
    """

    def __init__(
        self,
        config: FilterConfig | None = None,
        scorers: Sequence[Scorer] | None = None,
        *,
        memorisation: MemorisationScorer | None = None,
        duplicates: bool = True,
        enabled: bool = True,
    ) -> None:
        self.config = config or FilterConfig()
        self.enabled = enabled
        self.scorers: list[Scorer] = (
            list(default_scorers() if scorers is None else scorers) if enabled else []
        )
        self.memorisation = memorisation if enabled else None
        self.run_index = RunIndex() if (enabled and duplicates) else None
        self._unnamed = 0  # ids for images decided without a sample id
        self._override_cache: dict[tuple[tuple[str, Any], ...], FilterConfig] = {}
        unknown = {n for s in self.scorers for n in s.names} - set(SCORE_NAMES)
        if unknown:
            raise FilterConfigError(
                f"scorers produce unknown score names {sorted(unknown)}; known: {SCORE_NAMES}"
            )

    @property
    def name_of_thresholds(self) -> dict[str, float | None]:
        """Override key -> current bound (None = disabled)."""
        return self.config.thresholds()

    def thresholds(self) -> dict[str, float | None]:
        return self.config.thresholds()

    def config_for(self, overrides: Mapping[str, Any] | None) -> FilterConfig:
        """The filter's config with per-entry ``overrides`` on top (validated, cached)."""
        if not overrides:
            return self.config
        key = tuple(sorted(overrides.items(), key=lambda kv: str(kv[0])))
        try:
            hit = self._override_cache.get(key)
        except TypeError:  # unhashable values: validate without caching
            return self.config.model_copy(update=resolve_overrides(overrides))
        if hit is None:
            hit = self.config.model_copy(update=resolve_overrides(overrides))
            if len(self._override_cache) < 1024:
                self._override_cache[key] = hit
        return hit

    def score(self, image: np.ndarray | ImageView) -> ScoredImage:
        """Run the stateless scorers (and memorisation); ``duplicate`` stays None until :meth:`decide`."""
        scores: dict[str, float | None] = dict.fromkeys(SCORE_NAMES)
        if not self.enabled:
            return ScoredImage(scores)
        view = image if isinstance(image, ImageView) else ImageView(image)
        for scorer in self.scorers:
            for name, value in scorer.compute(view).items():
                scores[name] = None if value is None or math.isnan(value) else float(value)
        if self.memorisation is not None:
            scores["memorisation"] = self.memorisation.compute(view)["memorisation"]
        fp = fingerprint(view) if self.run_index is not None else None
        return ScoredImage(scores, fp)

    def decide(
        self,
        scored: ScoredImage,
        overrides: Mapping[str, Any] | None = None,
        skin_tones: Sequence[str] | None = None,
    ) -> FilterResult:
        """Add the duplicate score (against the images kept so far), apply the rule, remember kept images.

        ``skin_tones``: the groups the image must show (a manifest entry's ``expect``); an image whose
        ``ita`` falls in another group, or was not measured, is dropped with the reason ``skin_tone``.
        """
        self._unnamed += 1
        return self.decide_many([(f"image-{self._unnamed}", scored)], overrides, [skin_tones])[0]

    def decide_many(
        self,
        items: Sequence[tuple[str, ScoredImage]],
        overrides: Mapping[str, Any] | None = None,
        skin_tones: Sequence[Sequence[str] | None] | None = None,
    ) -> list[FilterResult]:
        """:meth:`decide` for a batch of (sample id, scored image), in order, with one duplicate lookup
        for the batch. The sample id lets a sample rendered again never count as its own duplicate."""
        config = self.config_for(overrides)
        tones = list(skin_tones) if skin_tones is not None else [None] * len(items)
        if len(tones) != len(items):
            raise ValueError(f"skin_tones: {len(tones)} given for {len(items)} images")
        scores = [dict(scored.scores) for _, scored in items]
        if not self.enabled:
            return [FilterResult(True, [], s) for s in scores]

        def reasons_of(k: int) -> list[str]:
            return apply_rule(config, scores[k]) + skin_tone_reasons(scores[k].get("ita"), tones[k])

        if self.run_index is not None:
            looked = [k for k, (_, scored) in enumerate(items) if scored.fingerprint is not None]
            candidates = [
                DuplicateCandidate(
                    items[k][0], items[k][1].fingerprint, config.duplicate_max, eligible=not reasons_of(k)
                )
                for k in looked
            ]
            for k, sim in zip(looked, self.run_index.check_and_add(candidates), strict=True):
                scores[k]["duplicate"] = sim
        results = []
        for k in range(len(items)):
            reasons = reasons_of(k)
            results.append(FilterResult(not reasons, reasons, scores[k]))
        return results

    def share_duplicates(self, duplicate_log: DuplicateLogClient, actor: str) -> None:
        """Match images against every actor's kept images through the run's log, not this filter's only."""
        if self.run_index is not None:
            self.run_index.join(duplicate_log, actor)

    def evaluate(
        self,
        image: np.ndarray,
        overrides: Mapping[str, Any] | None = None,
        skin_tones: Sequence[str] | None = None,
    ) -> FilterResult:
        """Score one HxWx3 uint8 RGB image and decide; ``overrides`` and ``skin_tones`` apply to it only."""
        if overrides:
            self.config_for(overrides)  # fail on a bad key before any work
        return self.decide(self.score(image), overrides, skin_tones)

    def reset(self) -> None:
        """Forget the run state (the images kept so far, used for duplicates)."""
        if self.run_index is not None:
            self.run_index = RunIndex()

    def __repr__(self) -> str:
        on = {k: v for k, v in self.config.thresholds().items() if v is not None}
        return f"ImageFilter(enabled={self.enabled}, thresholds={on})"


def build_filter(
    preset: str = "default",
    overrides: Mapping[str, Any] | None = None,
    reference_dir: str | os.PathLike[str] | None = None,
    clip_model: str | os.PathLike[str] | None = None,
    *,
    config: FilterConfig | Mapping[str, Any] | None = None,
) -> ImageFilter:
    """Build a filter.

    ``preset``: "default" (all default scorers and thresholds), "none" (keeps everything, computes
    nothing, every score None), or the path of a profile YAML (``*.yaml`` / ``*.yml``, written by
    ``dermgen filter calibrate``): the default scorers with the profile's thresholds. ``overrides``: key -> bound or None (see :func:`resolve_overrides`).
    ``reference_dir``: folder of reference (fine-tuning) images for the memorisation check.
    ``clip_model``: local transformers CLIP model directory for the optional ``clip`` score.
    ``config``: a full FilterConfig (or mapping of its fields) instead of the default thresholds.
    """
    from dermgen.filters.calibrate import is_profile_path, load_profile

    if preset not in PRESETS and not is_profile_path(preset):
        raise FilterConfigError(
            f"unknown filter preset {preset!r}; expected one of {', '.join(PRESETS)} or a profile *.yaml file"
        )
    if preset == "none":
        if overrides:
            resolve_overrides(overrides)  # still reject bad keys
        return ImageFilter(FilterConfig.disabled(), enabled=False)
    if config is None and preset != "default":
        base = load_profile(preset)
    elif config is None:
        base = FilterConfig()
    elif isinstance(config, FilterConfig):
        base = config
    else:
        base = FilterConfig.parse(config)
    base = base.model_copy(update=resolve_overrides(overrides)) if overrides else base
    scorers = default_scorers()
    if clip_model is not None:
        from dermgen.filters.clip import ClipScorer

        scorers.append(ClipScorer(clip_model))
    memorisation = MemorisationScorer(reference_dir) if reference_dir is not None else None
    return ImageFilter(base, scorers, memorisation=memorisation)
