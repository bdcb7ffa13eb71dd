"""The rule, the config, overrides and presets."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from dermgen.errors import ConfigError
from dermgen.filters import (
    DEFAULT_THRESHOLDS,
    SCORE_NAMES,
    FilterConfig,
    FilterConfigError,
    apply_rule,
    build_filter,
    override_keys,
    resolve_overrides,
)
from filterlab import noise


def _scores(**kw):
    base = dict.fromkeys(SCORE_NAMES, None)
    base.update(kw)
    return base


def test_reason_strings_for_max_and_min_bounds():
    cfg = FilterConfig()
    reasons = apply_rule(cfg, _scores(ink=0.5, contrast=0.1, lesion_area=0.001, blur=0.1))
    assert reasons == [
        f"ink>{DEFAULT_THRESHOLDS['ink_max']:g}",
        f"contrast<{DEFAULT_THRESHOLDS['contrast_min']:g}",
        f"lesion_area<{DEFAULT_THRESHOLDS['lesion_area_min']:g}",
    ]
    assert apply_rule(cfg, _scores(ink=0.0, contrast=0.9)) == []


def test_none_scores_and_none_bounds_skip_checks():
    cfg = FilterConfig(ink_max=None)
    assert apply_rule(cfg, _scores(ink=1.0)) == []
    assert apply_rule(FilterConfig(), _scores(ink=None, clip=-1.0)) == ["clip<0.2"]
    assert apply_rule(FilterConfig(), _scores(ink=float("nan"))) == []


def test_lesion_area_max_bound_and_explicit_keys():
    cfg = FilterConfig().model_copy(update=resolve_overrides({"lesion_area.max": 0.5, "lesion_area": 0.2}))
    assert apply_rule(cfg, _scores(lesion_area=0.6)) == ["lesion_area>0.5"]
    assert apply_rule(cfg, _scores(lesion_area=0.1)) == ["lesion_area<0.2"]
    assert resolve_overrides({"ink.max": 0.3}) == {"ink_max": 0.3}
    assert resolve_overrides({"contrast.min": None}) == {"contrast_min": None}


def test_unknown_override_key_names_key_and_lists_valid():
    with pytest.raises(ValueError) as err:
        resolve_overrides({"inkk": 0.1})
    msg = str(err.value)
    assert "'inkk'" in msg and "lesion_area.max" in msg and "ink" in msg
    with pytest.raises(FilterConfigError):
        resolve_overrides({"ink.min": 0.1})  # ink has no min bound
    assert isinstance(err.value, ConfigError)
    assert "ink" in override_keys() and "ink.min" not in override_keys()


def test_bad_values_name_field_value_and_expectation():
    with pytest.raises(ValueError, match=r"ink_max.*1\.5.*\[0, 1\]"):
        resolve_overrides({"ink": 1.5})
    with pytest.raises(ValidationError, match=r"blur_max = 'x'.*expected a number"):
        FilterConfig(blur_max="x")
    with pytest.raises(ValidationError, match="extra"):
        FilterConfig(inkk=0.1)
    with pytest.raises(FilterConfigError, match="unknown filter threshold 'inkk'"):
        FilterConfig.parse({"inkk": 0.1})
    with pytest.raises(FilterConfigError, match="True"):
        resolve_overrides({"ink": True})


def test_build_filter_presets_and_overrides(small_image):
    flt = build_filter("default", overrides={"ink": 0.2, "lesion_area": None})
    assert flt.config.ink_max == 0.2 and flt.config.lesion_area_min is None
    assert flt.thresholds()["ink"] == 0.2
    with pytest.raises(FilterConfigError, match="preset"):
        build_filter("strict")
    with pytest.raises(ValueError, match="nope"):
        build_filter("default", overrides={"nope": 1})
    none = build_filter("none")
    res = none.evaluate(small_image)
    assert res.kept and res.reasons == [] and set(res.scores) == set(SCORE_NAMES)
    assert all(v is None for v in res.scores.values())


def test_evaluate_returns_every_score_and_keeps_clean(small_image):
    flt = build_filter("default")
    res = flt.evaluate(small_image)
    assert res.kept, res.reasons
    assert list(res.scores) == list(SCORE_NAMES)
    assert res.scores["memorisation"] is None and res.scores["clip"] is None
    assert all(isinstance(res.scores[k], float) for k in SCORE_NAMES if k not in ("memorisation", "clip"))


def test_per_entry_overrides_relax_one_image_only(small_image):
    flt = build_filter("default")
    inked = noise.make_noisy(small_image, "ink", "heavy", "rule")
    res = flt.evaluate(inked)
    assert not res.kept and any(r.startswith("ink>") for r in res.reasons)
    relaxed = flt.evaluate(inked, overrides={"ink": None})
    assert relaxed.kept, relaxed.reasons
    assert not build_filter("default").evaluate(inked).kept  # the filter's own config is unchanged
    # a tiny-mole prompt: relaxing lesion_area keeps a frame with a barely visible lesion
    plain = np.full((128, 128, 3), (215, 165, 160), np.uint8) + np.random.default_rng(0).integers(
        0, 3, (128, 128, 3)
    ).astype(np.uint8)
    flt.reset()
    assert "lesion_area<0.011" in flt.evaluate(plain).reasons
    flt.reset()
    assert "lesion_area<0.011" not in flt.evaluate(plain, overrides={"lesion_area": None}).reasons
    with pytest.raises(ValueError, match="bogus"):
        flt.evaluate(small_image, overrides={"bogus": 1})


def test_duplicates_within_a_run_and_reset(small_image):
    flt = build_filter("default")
    assert flt.evaluate(small_image).kept
    again = flt.evaluate(noise.near_copy(small_image, noise.rng_for("r"), "jpeg"))
    assert not again.kept and again.reasons == ["duplicate>0.89"]
    assert flt.evaluate(small_image, overrides={"duplicate": None}).kept
    flt.reset()
    assert flt.evaluate(small_image).kept


def test_dropped_images_are_not_indexed(small_image):
    flt = build_filter("default", overrides={"ink": 0.0})
    inked = noise.make_noisy(small_image, "ink", "heavy", "x")
    assert not flt.evaluate(inked).kept
    assert flt.evaluate(inked, overrides={"ink": None}).scores["duplicate"] == 0.0
