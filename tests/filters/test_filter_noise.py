"""The noise synthesis helpers are deterministic and the split is balanced."""

from __future__ import annotations

import numpy as np
import pytest

from filterlab import noise


def test_make_noisy_is_deterministic(small_image):
    for cat in noise.CATEGORIES:
        a = noise.make_noisy(small_image, cat, "heavy", "seed")
        b = noise.make_noisy(small_image, cat, "heavy", "seed")
        assert np.array_equal(a, b) and a.shape == small_image.shape and a.dtype == np.uint8
        assert not np.array_equal(a, small_image)
    assert not np.array_equal(
        noise.make_noisy(small_image, "hair", "heavy", 1), noise.make_noisy(small_image, "hair", "heavy", 2)
    )


def test_unknown_category_and_severity(small_image):
    with pytest.raises(ValueError, match="category"):
        noise.make_noisy(small_image, "smudge")
    with pytest.raises(ValueError, match="severity"):
        noise.make_noisy(small_image, "ink", "extreme")


def test_split_is_deterministic_balanced_and_disjoint(samples_dir):
    from dermgen.filters.dedup import iter_image_files

    paths = iter_image_files(samples_dir)
    cal, test = noise.split_samples(paths)
    cal2, test2 = noise.split_samples(list(reversed(paths)))
    assert cal == cal2 and test == test2
    assert len(cal) == len(test) == len(paths) // 2
    assert not set(cal) & set(test)
    assert sum(p.parent.name == "benign" for p in cal) == sum(p.parent.name == "benign" for p in paths) // 2


def test_near_copies_differ_but_resemble(small_image):
    for t in noise.COPY_TRANSFORMS:
        c = noise.near_copy(small_image, noise.rng_for(t), t)
        assert c.ndim == 3 and c.dtype == np.uint8
        if t != "exact":
            assert c.shape != small_image.shape or not np.array_equal(c, small_image)
