"""Every scorer on real kept samples and on noisy variants made from them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dermgen.filters import SCORE_NAMES, ImageView, Scorer
from dermgen.filters.color import ClippedScorer, ContrastScorer, InkScorer, TintScorer
from dermgen.filters.dedup import DuplicateScorer, FingerprintIndex, MemorisationScorer, fingerprint, phash
from dermgen.filters.domain import OffDomainScorer
from dermgen.filters.hair import HairScorer
from dermgen.filters.lesion import LesionScorer
from dermgen.filters.names import UNBOUNDED_SCORES
from dermgen.filters.pipeline import default_scorers
from dermgen.filters.ruler import RulerScorer
from dermgen.filters.sharpness import BlurScorer
from filterlab import noise


def test_default_scorers_follow_the_protocol(small_image):
    view = ImageView(small_image)
    seen = set()
    for scorer in default_scorers():
        assert isinstance(scorer, Scorer)
        out = scorer.compute(view)
        assert set(out) == set(scorer.names)
        if set(scorer.names) <= set(UNBOUNDED_SCORES):  # ita: an angle in degrees, judged by its group
            assert scorer.__doc__ and "-90..90" in scorer.__doc__, type(scorer).__name__
            assert all(-90.0 <= v <= 90.0 for v in out.values()), out
        else:
            assert scorer.__doc__ and "0..1" in scorer.__doc__, type(scorer).__name__
            assert all(0.0 <= v <= 1.0 for v in out.values()), out
        single = scorer.score(small_image)
        assert isinstance(single, dict) if len(scorer.names) > 1 else isinstance(single, float)
        seen.update(scorer.names)
    assert seen <= set(SCORE_NAMES)


def test_ink_strokes_score_high_and_dots_low(small_image, large_image):
    s = InkScorer()
    for img in (small_image, large_image):
        clean = s.score(img)
        assert clean < 0.02
        assert s.score(noise.make_noisy(img, "ink", "heavy", "t")) > 0.035 > clean
        assert s.score(noise.make_noisy(img, "ink", "mild", "t")) < 0.02


def test_blur_rises_with_gaussian_blur(small_image, large_image):
    s = BlurScorer()
    for img in (small_image, large_image):
        clean = s.score(img)
        assert clean < 0.33
        blurred = s.score(cv2.GaussianBlur(img, (0, 0), 6))
        assert blurred > 0.38 and blurred > clean
    assert s.score(np.full((64, 64, 3), 128, np.uint8)) == 1.0


def test_contrast_drops_when_washed_out(small_image, large_image):
    s = ContrastScorer()
    for img in (small_image, large_image):
        assert s.score(img) > 0.33
        assert s.score(noise.make_noisy(img, "washout", "heavy", "t")) < 0.28
    assert s.score(np.zeros((32, 32, 3), np.uint8)) == 0.0


def test_tint_flags_green_and_blue_casts_only(small_image, large_image):
    s = TintScorer()
    for img in (small_image, large_image):
        assert s.score(img) < 0.26
        green = np.clip(img.astype(np.float32) * (0.5, 1.3, 0.6), 0, 255).astype(np.uint8)
        assert s.score(green) > 0.3
    assert s.score(noise.make_noisy(small_image, "tint", "mild", "t")) < 0.26


def test_clipped_counts_burnt_and_crushed_pixels(small_image):
    s = ClippedScorer()
    assert s.score(small_image) < 0.05
    assert s.score(noise.make_noisy(small_image, "overexposed", "heavy", "t")) > 0.3
    assert s.score(np.zeros((40, 40, 3), np.uint8)) == 1.0


def test_hair_counts_many_curves_not_a_few(small_image, large_image):
    s = HairScorer()
    for img in (small_image, large_image):
        assert s.score(img) < 0.05
        assert s.score(noise.make_noisy(img, "hair", "heavy", "t")) > 0.09
        assert s.score(noise.make_noisy(img, "hair", "mild", "t")) < 0.06


def test_ruler_strip_scores_high_small_scale_bar_does_not(small_image, large_image):
    s = RulerScorer()
    for img in (small_image, large_image):
        assert s.score(img) == 0.0
        assert s.score(noise.make_noisy(img, "ruler", "heavy", "t")) > 0.5
        assert s.score(noise.make_noisy(img, "ruler", "mild", "t")) < 0.2


def test_lesion_area_and_offcentre(small_image, large_image):
    s = LesionScorer()
    small, large = s.score(small_image), s.score(large_image)
    assert 0.01 < small["lesion_area"] < large["lesion_area"] < 0.9
    assert small["lesion_offcentre"] < 0.2
    h, w = small_image.shape[:2]
    shifted = cv2.warpAffine(
        small_image, np.float32([[1, 0, w * 0.35], [0, 1, h * 0.3]]), (w, h), borderMode=cv2.BORDER_REFLECT
    )
    moved = s.score(shifted)
    assert moved["lesion_offcentre"] > small["lesion_offcentre"] + 0.3
    plain = np.full((128, 128, 3), (220, 170, 160), np.uint8)
    assert s.score(plain) == {"lesion_area": 0.0, "lesion_offcentre": 1.0}


@pytest.mark.parametrize("kind", noise.OFF_DOMAIN_KINDS)
def test_off_domain_frames(kind, small_image):
    frame = noise.off_domain_frame(noise.rng_for("t", kind), (256, 256), kind, small_image)
    scores = {s.name: s.score(frame) for s in (OffDomainScorer(), RulerScorer())}
    # geometric patterns with straight edges may be left to the ruler score
    assert scores["off_domain"] > 0.33 or (kind in ("shapes", "checker", "stripes") and scores["ruler"] > 0.5)


def test_off_domain_is_zero_on_kept_samples(small_image, large_image):
    assert OffDomainScorer().score(small_image) == 0.0
    assert OffDomainScorer().score(large_image) == 0.0


def test_duplicate_index_finds_near_copies_not_other_samples(split):
    samples = split[0][:6]
    d = DuplicateScorer()
    for s in samples:
        assert d.score(s.image) < 0.89
        d.add(s.image)
    for i, t in enumerate(noise.COPY_TRANSFORMS):
        s = samples[i % len(samples)]
        assert d.score(noise.near_copy(s.image, noise.rng_for("t", t), t)) > 0.89, t
    d.reset()
    assert d.score(samples[0].image) == 0.0


def test_memorisation_from_a_reference_folder(tmp_path, split):
    refs = split[0][:3]
    for s in refs:
        (tmp_path / "sub").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "sub" / s.name.replace("/", "_")), s.image[..., ::-1])
    (tmp_path / "notes.txt").write_text("not an image")
    m = MemorisationScorer(tmp_path)
    assert len(m.index) == 3
    copy = noise.near_copy(refs[1].image, noise.rng_for("m"), "combo")
    sim, path = m.nearest(copy)
    assert sim > 0.89 and path is not None and path.endswith(refs[1].name.replace("/", "_"))
    assert m.score(split[1][0].image) < 0.89


def test_fingerprint_and_phash_are_stable(small_image):
    a, b = fingerprint(small_image), fingerprint(small_image.copy())
    assert np.array_equal(a.gray, b.gray) and np.allclose(a.thumb, b.thumb)
    assert phash(small_image) == phash(small_image.copy())
    index = FingerprintIndex()
    assert index.nearest(a) == (0.0, None)


def test_image_checks(small_image):
    with pytest.raises(ValueError, match="uint8"):
        ImageView(small_image.astype(np.float32))
    with pytest.raises(ValueError, match="HxWx3"):
        ImageView(np.zeros((10, 10, 2), np.uint8))
    grey = ImageView(small_image[..., 0])
    assert grey.rgb.shape == small_image.shape
    tiny = ImageView(cv2.resize(small_image, (64, 64), interpolation=cv2.INTER_AREA))
    assert tiny.work_rgb.shape == (64, 64, 3)
