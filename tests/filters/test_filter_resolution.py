"""The default filter decides the same at every resolution and drops the study's real discarded frames.

Images come from the repository only: ``tests/assets/derm-t2im-discarded`` (nine real frames the
study's authors discarded, ~112 px crops) and ``tests/assets/filter2`` (ten kept samples re-encoded at
256 px). Real-like noise comes from ``benchmarks/realistic_noise.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from dermgen.filters import ImageView, build_filter
from dermgen.filters.base import ANALYSIS_SIDE, FINE_SIDE
from dermgen.filters.dedup import read_rgb

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "tests" / "assets"
DISCARDED = ASSETS / "derm-t2im-discarded"
KEPT = ASSETS / "filter2"
sys.path.insert(0, str(ROOT / "benchmarks"))

import realistic_noise as rn  # noqa: E402

# the reasons a person gives for each discarded frame (see the shared folder's README)
EXPECTED = {
    "d01": {"ink"},
    "d04": {"ink"},
    "d07": {"ink"},
    "d16": {"ink"},
    "d19": {"ink"},
    "d22": {"ink"},
    "d25": {"tint", "off_domain"},
    "d13": {"hair", "off_domain"},
    "d10": {"smear", "tint", "off_domain"},  # a vivid blue smear over part of the lesion
}
SIZES = ("112", "256", "512", "768", "112up512")


def resize_to(img: np.ndarray, size: str) -> np.ndarray:
    def rs(x: np.ndarray, side: int) -> np.ndarray:
        interp = cv2.INTER_AREA if side < x.shape[0] else cv2.INTER_CUBIC
        return x if x.shape[0] == side else cv2.resize(x, (side, side), interpolation=interp)

    return rs(rs(img, 112), 512) if size == "112up512" else rs(img, int(size))


def kept_samples() -> list[tuple[str, np.ndarray]]:
    return [(p.stem, read_rgb(p)) for p in sorted(KEPT.glob("*.png"))]


def score_names(reasons: list[str]) -> set[str]:
    return {r.replace("<", ">").split(">")[0] for r in reasons}


def test_assets_are_in_the_repository():
    assert sorted(p.stem for p in DISCARDED.glob("*.png")) == sorted(EXPECTED)
    assert len(kept_samples()) == 10


@pytest.mark.parametrize("size", ["112", "512"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_discarded_frames_are_dropped_for_the_reason_a_person_gives(name, size):
    img = resize_to(read_rgb(DISCARDED / f"{name}.png"), size)
    res = build_filter("default").evaluate(img)
    assert not res.kept, res.scores
    first = score_names(res.reasons[:1])
    assert first <= EXPECTED[name], (res.reasons, res.scores)


@pytest.mark.parametrize("name", ["d01", "d04", "d16", "d19"])
def test_marker_frames_are_not_called_hair_or_ruler(name):
    for size in ("112", "512"):
        res = build_filter("default").evaluate(resize_to(read_rgb(DISCARDED / f"{name}.png"), size))
        assert "ink" in score_names(res.reasons)
        assert not score_names(res.reasons) & {"hair", "ruler"}, (size, res.reasons)


def test_kept_samples_are_kept_at_every_size():
    flt = build_filter("default")
    for name, img in kept_samples():
        for size in SIZES:
            flt.reset()
            res = flt.evaluate(resize_to(img, size))
            assert res.kept, (name, size, res.reasons)


def test_scores_barely_move_with_resolution():
    flt = build_filter("default")
    for _, img in kept_samples()[:4]:
        scores = {}
        for size in SIZES:
            flt.reset()
            scores[size] = flt.score(resize_to(img, size)).scores
        for key in ("ink", "tint", "hair", "lesion_area", "contrast"):
            values = [scores[s][key] for s in SIZES]
            assert max(values) - min(values) < 0.05, (key, values)


@pytest.mark.parametrize("category", ["ink_band", "ink_loops", "ink_scribbles"])
def test_real_like_marker_noise_is_dropped_as_ink(category):
    flt = build_filter("default")
    for name, img in kept_samples()[::2]:
        noisy = rn.make_real_like(img, category, name)
        for size in ("112", "512"):
            flt.reset()
            res = flt.evaluate(resize_to(noisy, size))
            assert "ink" in score_names(res.reasons), (name, size, res.reasons, res.scores["ink"])
            assert not score_names(res.reasons) & {"hair", "ruler"}, (name, size, res.reasons)


def test_real_like_scalp_and_casts_are_dropped_with_their_reason():
    flt = build_filter("default")
    for name, img in kept_samples()[::3]:
        for category in ("hairy_scalp", "blue_cast"):
            flt.reset()
            res = flt.evaluate(rn.make_real_like(img, category, name))
            assert score_names(res.reasons) & set(rn.REAL_LIKE[category][1]), (category, name, res.reasons)


@pytest.mark.parametrize("category", list(rn.KEPT_LIKE))
def test_mild_marks_the_authors_kept_stay_kept(category):
    flt = build_filter("default")
    for name, img in kept_samples():
        flt.reset()
        res = flt.evaluate(rn.make_real_like(img, category, name))
        assert res.kept, (category, name, res.reasons)


def test_real_like_noise_is_deterministic():
    _, img = kept_samples()[0]
    for category in [*rn.REAL_LIKE, *rn.KEPT_LIKE]:
        a = rn.make_real_like(img, category, "s")
        assert np.array_equal(a, rn.make_real_like(img, category, "s"))
        assert not np.array_equal(a, img)
    with pytest.raises(ValueError, match="real-like category"):
        rn.make_real_like(img, "smudge")


def test_analysis_copies_have_fixed_sizes():
    _, img = kept_samples()[0]
    for side in (64, 112, 512):
        view = ImageView(cv2.resize(img, (side, side)))
        assert view.analysis_rgb.shape == (ANALYSIS_SIDE, ANALYSIS_SIDE, 3)
        assert view.fine_rgb.shape == (FINE_SIDE, FINE_SIDE, 3)
        assert view.analysis_lab.shape[:2] == view.analysis_gray.shape == (ANALYSIS_SIDE, ANALYSIS_SIDE)
    wide = ImageView(cv2.resize(img, (300, 150)))
    assert wide.analysis_rgb.shape == (ANALYSIS_SIDE // 2, ANALYSIS_SIDE, 3)
