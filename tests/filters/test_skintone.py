"""The ITA skin-tone score: exact groups on patches of known CIELAB, robustness to a lesion, real samples."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dermgen.filters import build_filter
from dermgen.filters.base import ImageView
from dermgen.filters.dedup import read_rgb
from dermgen.filters.skintone import SkinToneScorer, lab_to_srgb, srgb_to_lab
from dermgen.skintone import SKIN_TONES, ita_degrees, skin_tone_of, skin_tone_reasons

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "skintone"
LESION_SHIFT_MAX = 1.0  # degrees: a dark lesion in the middle may move the score by at most this


def patch(lab: tuple[float, float, float], side: int = 96, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A skin patch of one CIELAB colour (with optional pixel noise in L*a*b* units), as sRGB uint8."""
    arr = np.broadcast_to(np.asarray(lab, dtype=np.float64), (side, side, 3)).copy()
    if noise:
        arr += np.random.default_rng(seed).normal(0, noise, arr.shape)
    return lab_to_srgb(arr)


def lab_for(ita: float, radius: float = 30.0) -> tuple[float, float, float]:
    """A skin-like colour (a* 10) with the given ITA: on a circle of ``radius`` around (L* 50, b* 0)."""
    t = math.radians(ita)
    return (50.0 + radius * math.sin(t), 10.0, radius * math.cos(t))


def test_lab_conversion_round_trips_and_matches_reference_white():
    lab = srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0]], dtype=np.uint8))
    assert lab[0] == pytest.approx([100.0, 0.0, 0.0], abs=0.01)
    assert lab[1] == pytest.approx([0.0, 0.0, 0.0], abs=0.01)
    rgb = np.random.default_rng(1).integers(0, 256, (500, 3), dtype=np.uint8)
    assert np.abs(lab_to_srgb(srgb_to_lab(rgb)).astype(int) - rgb).max() <= 1


@pytest.mark.parametrize(
    ("ita", "group"),
    [
        (90.0, "very_light"),
        (55.0001, "very_light"),
        (55.0, "light"),
        (41.0001, "light"),
        (41.0, "intermediate"),
        (28.0001, "intermediate"),
        (28.0, "tan"),
        (10.0001, "tan"),
        (10.0, "brown"),
        (-29.9999, "brown"),
        (-30.0, "dark"),
        (-90.0, "dark"),
    ],
)
def test_group_boundaries_go_to_the_darker_group(ita, group):
    assert skin_tone_of(ita) == group


def test_ita_is_atan2_safe():
    assert ita_degrees(70.0, 20.0) == pytest.approx(math.degrees(math.atan(20 / 20)))
    assert ita_degrees(70.0, 0.0) == pytest.approx(90.0)
    assert ita_degrees(30.0, -5.0) == pytest.approx(-90.0)
    assert skin_tone_of(None) is None and skin_tone_of(float("nan")) is None


@pytest.mark.parametrize(
    ("ita", "group"),
    [(70, "very_light"), (48, "light"), (34.5, "intermediate"), (19, "tan"), (-10, "brown"), (-50, "dark")],
)
def test_uniform_patches_of_known_lab_get_exact_groups(ita, group):
    lab = lab_for(ita)
    measured = SkinToneScorer().score(patch(lab))
    assert measured == pytest.approx(ita, abs=0.5)  # sRGB uint8 rounding only
    assert skin_tone_of(measured) == group


@pytest.mark.parametrize("boundary", [55.0, 41.0, 28.0, 10.0, -30.0])
def test_noisy_patches_one_degree_either_side_of_a_boundary(boundary):
    upper = SKIN_TONES[(55.0, 41.0, 28.0, 10.0, -30.0).index(boundary)]
    lower = SKIN_TONES[SKIN_TONES.index(upper) + 1]
    above = SkinToneScorer().score(patch(lab_for(boundary + 1.5), noise=2.0, seed=3))
    below = SkinToneScorer().score(patch(lab_for(boundary - 1.5), noise=2.0, seed=4))
    assert skin_tone_of(above) == upper
    assert skin_tone_of(below) == lower


def _with_lesion(skin_lab, side=128, radius=0.22, seed=0):
    """A skin patch with a dark brown lesion (and a darker core) in the middle, plus skin noise."""
    rng = np.random.default_rng(seed)
    lab = np.broadcast_to(np.asarray(skin_lab, float), (side, side, 3)).copy()
    lab += rng.normal(0, 1.5, lab.shape)
    yy, xx = np.mgrid[0:side, 0:side]
    r = np.hypot(yy - side / 2, xx - side / 2) / side
    edge = np.clip((radius - r) / 0.03, 0, 1)[..., None]  # a soft rim, as rendered lesions have
    lesion = np.array([28.0, 18.0, 22.0])
    lab = lab * (1 - edge) + lesion * edge
    lab[r < radius * 0.4] = [18.0, 10.0, 8.0]
    return lab_to_srgb(lab)


@pytest.mark.parametrize("ita", [65.0, 35.0, 0.0, -40.0])
def test_a_dark_lesion_in_the_middle_moves_the_score_less_than_a_degree(ita):
    skin = lab_for(ita)
    plain = SkinToneScorer().score(patch(skin, side=128, noise=1.5))
    with_lesion = SkinToneScorer().score(_with_lesion(skin))
    assert abs(with_lesion - plain) < LESION_SHIFT_MAX
    if ita < 0:
        return  # on dark skin the lesion is close to the skin colour: the contrast below needs light skin
    # the same statistic over every pixel (no lesion mask) would move much more: the mask matters
    lab = srgb_to_lab(_with_lesion(skin))
    naive = ita_degrees(float(lab[..., 0].mean()), float(lab[..., 2].mean()))
    assert abs(naive - plain) > 3 * LESION_SHIFT_MAX


def test_skin_tone_rule_drops_outside_the_expected_groups():
    assert skin_tone_reasons(-40.0, ["brown", "dark"]) == []
    assert skin_tone_reasons(60.0, ["brown", "dark"]) == ["skin_tone"]
    assert skin_tone_reasons(None, ["dark"]) == ["skin_tone"]  # unmeasured cannot prove the tone
    assert skin_tone_reasons(60.0, None) == [] and skin_tone_reasons(60.0, []) == []


def test_filter_records_ita_and_applies_expect():
    flt = build_filter("default", overrides={"lesion_area": None})
    dark = patch(lab_for(-50), noise=1.0)
    res = flt.evaluate(dark, skin_tones=["very_light", "light"])
    assert res.scores["ita"] == pytest.approx(-50, abs=1.0)
    assert "skin_tone" in res.reasons and not res.kept
    flt.reset()
    res = flt.evaluate(dark, skin_tones=["brown", "dark"])
    assert "skin_tone" not in res.reasons


def real_assets() -> list[Path]:
    files = sorted(ASSETS.glob("*.png"))
    assert 4 <= len(files) <= 6, f"expected the kept samples in {ASSETS}"
    return files


@pytest.mark.parametrize("path", real_assets(), ids=lambda p: p.name)
def test_real_kept_samples_get_light_skin_groups(path):
    """Derm-T2IM's kept samples show light skin; each asset's measured group is light, not tan or darker."""
    ita = SkinToneScorer().score(read_rgb(path))
    assert skin_tone_of(ita) in ("very_light", "light", "intermediate"), (path.name, ita)


def test_real_samples_lesion_is_left_out():
    """On a real sample the lesion is excluded: the skin mask covers little of the segmented lesion."""
    from dermgen.filters.lesion import segment_lesion
    from dermgen.filters.skintone import skin_mask

    view = ImageView(read_rgb(real_assets()[0]))
    lesion = segment_lesion(view).mask
    assert lesion.any()
    assert not (skin_mask(view) & lesion).any()


def test_dermgen_filter_on_a_folder_writes_ita_and_skin_tone(tmp_path):
    import pyarrow.parquet as pq

    from dermgen.filters.standalone import filter_folder

    out = tmp_path / "scores.parquet"
    filter_folder(str(ASSETS), str(out), workers=1)
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == len(real_assets())
    for r in rows:
        assert r["skin_tone"] == skin_tone_of(r["ita"])
        assert r["skin_tone"] in ("very_light", "light", "intermediate")
