"""The blue-smear score on small synthetic frames: a vivid blue streak counts, a blue-grey veil does not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dermgen.filters import ImageView, build_filter
from dermgen.filters.rule import DEFAULT_THRESHOLDS
from dermgen.filters.smear import SmearScorer, smear_mask

SIDE = 256
BOUND = DEFAULT_THRESHOLDS["smear_max"]
COBALT = (20, 80, 200)  # the colour of the smear in the study's discarded frame d10 (RGB ~ 5, 80, 187)
VEIL = (70, 95, 145)  # a blue-grey veil as in kept malignant samples (Lab chroma ~ 35)


def lesion_frame(seed: int = 0) -> np.ndarray:
    """Pink skin with a little texture and a brown lesion (radius a quarter of the side) in the middle."""
    rng = np.random.default_rng(seed)
    img = np.empty((SIDE, SIDE, 3), np.float32)
    img[:] = (205, 150, 140)
    cv2.circle(img, (SIDE // 2, SIDE // 2), SIDE // 4, (120, 75, 60), -1, lineType=cv2.LINE_AA)
    img += cv2.GaussianBlur(rng.normal(0, 6, (SIDE, SIDE, 1)).astype(np.float32), (0, 0), 1.5)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def with_streak(img: np.ndarray) -> np.ndarray:
    """A smooth cobalt streak, 4% of the side wide, from inside the lesion across its border onto skin."""
    out = img.copy()
    width = round(0.04 * SIDE)
    cv2.line(out, (SIDE // 2, SIDE // 2), (int(0.85 * SIDE), int(0.2 * SIDE)), COBALT, width, cv2.LINE_AA)
    return cv2.GaussianBlur(out, (0, 0), 0.8)


def with_veil(img: np.ndarray, seed: int = 0) -> np.ndarray:
    """A textured blue-grey patch (a dotted network, brightness +-30%) inside the lesion."""
    rng = np.random.default_rng(seed)
    out = img.astype(np.float32)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    inside = (yy - SIDE / 2) ** 2 + (xx - SIDE / 2) ** 2 <= (0.18 * SIDE) ** 2
    texture = cv2.GaussianBlur(rng.uniform(0.7, 1.3, (SIDE, SIDE)).astype(np.float32), (0, 0), 1.2)
    veil = np.array(VEIL, np.float32) * texture[..., None]
    out[inside] = veil[inside]
    return np.clip(out, 0, 255).astype(np.uint8)


def with_specks(img: np.ndarray, seed: int = 0) -> np.ndarray:
    """Sixty vivid blue specks (radius 0.4% of the side) scattered over the lesion and the skin."""
    rng = np.random.default_rng(seed)
    out = img.copy()
    for _ in range(60):
        x, y = (int(v) for v in rng.integers(int(0.1 * SIDE), int(0.9 * SIDE), 2))
        cv2.circle(out, (x, y), max(1, round(0.004 * SIDE)), COBALT, -1)
    return out


def smear(img: np.ndarray) -> float:
    return SmearScorer().score(img)


def test_a_smooth_blue_streak_across_the_lesion_border_is_a_smear():
    plain, streak = lesion_frame(), with_streak(lesion_frame())
    assert smear(plain) == 0.0
    score = smear(streak)
    # the streak is one patch of about 0.04 x 0.45 of the frame
    assert 5 * BOUND < score < 0.05, score
    res = build_filter("default").evaluate(streak)
    assert not res.kept and res.reasons[0].startswith("smear>"), res.reasons


def test_a_textured_blue_grey_veil_inside_the_lesion_is_not():
    veil = with_veil(lesion_frame())
    assert smear(veil) < BOUND / 4
    assert "smear" not in " ".join(build_filter("default").evaluate(veil).reasons)
    # the same veil in vivid cobalt is a smear
    vivid = lesion_frame()
    inside = with_veil(lesion_frame()) != vivid
    vivid[inside.any(axis=2)] = COBALT
    assert smear(vivid) > 5 * BOUND


def test_scattered_vivid_specks_do_not_add_up():
    specks = with_specks(lesion_frame())
    assert smear_mask(ImageView(specks)).mean() > BOUND  # more vivid blue than the bound ...
    assert smear(specks) < BOUND / 2  # ... but in no patch of its own size


def test_a_blue_fringe_in_the_frame_border_is_left_out():
    img = lesion_frame()
    img[: round(0.035 * SIDE), :] = COBALT  # a band inside the outer 4%
    assert smear(img) == 0.0


@pytest.mark.parametrize("side", [112, 512, 768])
def test_the_score_does_not_depend_on_the_resolution(side):
    streak = with_streak(lesion_frame())
    interp = cv2.INTER_AREA if side < SIDE else cv2.INTER_CUBIC
    resized = cv2.resize(streak, (side, side), interpolation=interp)
    assert smear(resized) == pytest.approx(smear(streak), rel=0.15)


def test_a_lavender_frame_is_not_a_smear():
    img = lesion_frame()
    lavender = np.clip(img.astype(np.float32) * (0.75, 0.75, 1.25) + (0, 0, 30), 0, 255).astype(np.uint8)
    assert smear(lavender) < BOUND / 4
