"""The fast paths of the copy-detection index: each equals the plain computation it replaces, and a large
index (past the ring pool) still finds turned, cropped, resized copies.

Uses only the 12 downscaled kept samples in tests/assets/memorisation plus procedural distractors.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dermgen.filters import dedup
from dermgen.filters.dedup import FingerprintIndex, fingerprint, iter_image_files, orient, read_rgb
from filterlab.copies import hard_copy

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "memorisation"


@pytest.fixture(scope="module")
def assets() -> list[np.ndarray]:
    return [read_rgb(f) for f in iter_image_files(ASSETS)]


def _distractor(rng: np.random.Generator, side: int = 128) -> np.ndarray:
    """A lesion-like frame: skin tone, fine texture, a dark blob somewhere near the centre."""
    img = rng.uniform((170, 110, 90), (235, 175, 160)).astype(np.float32) * np.ones(
        (side, side, 3), np.float32
    )
    texture = cv2.GaussianBlur(rng.normal(0, 1, (side, side)).astype(np.float32), (0, 0), rng.uniform(0.8, 2))
    img += rng.uniform(15, 35) * texture[..., None]
    blob = np.zeros((side, side), np.float32)
    centre = tuple(int(v) for v in rng.uniform(0.3, 0.7, 2) * side)
    axes = tuple(int(v) for v in rng.uniform(0.08, 0.3, 2) * side)
    cv2.ellipse(blob, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    img *= 1 - cv2.GaussianBlur(blob, (0, 0), 3)[..., None] * rng.uniform(0.3, 0.7, 3).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_pre_scan_equals_turning_the_query(assets):
    """Turning the entries' templates back (one product) scores like turning the query eight ways."""
    probe = dedup._Probe(fingerprint(assets[0]).gray, wide=True)
    templates = [dedup._pre_template(fingerprint(img).gray) for img in assets[:4]]
    fast = np.maximum(*probe.pre_scan(templates))
    one_way, none = dedup._Probe(fingerprint(assets[0]).gray).pre_scan(templates)
    assert none is None
    np.testing.assert_array_equal(one_way, probe.pre_scan(templates)[0])
    band = dedup._coarse_band(fingerprint(assets[0]).gray, dedup.PRE)
    # and the band zoomed by PRE_WIDE, its central PRE px (an entry cropped from the query lines up there)
    wide = cv2.resize(band, (round(dedup.PRE * dedup.PRE_WIDE),) * 2, interpolation=cv2.INTER_LINEAR)
    c = (len(wide) - dedup.PRE) // 2
    side = dedup.PRE_TEMPLATE
    plain = np.zeros_like(fast)
    for k in range(8):
        windows = np.concatenate(
            [
                np.lib.stride_tricks.sliding_window_view(orient(b, k), (side, side)).reshape(-1, side * side)
                for b in (band, wide[c : c + dedup.PRE, c : c + dedup.PRE])
            ]
        )
        windows = windows - windows.mean(axis=1, keepdims=True)
        windows /= np.linalg.norm(windows, axis=1, keepdims=True) + 1e-6
        plain[:, k] = (windows @ np.stack(templates).astype(np.float32).T).max(axis=0)
    np.testing.assert_allclose(fast, plain, atol=1e-5)
    assert int(np.argmax(fast[0])) == 0  # the query's own template lines up upright


@pytest.mark.parametrize("n", [513, 600, 5_000, 25_000])
def test_largest_is_the_exact_top_k(n):
    rng = np.random.default_rng(n)
    values = rng.random(n).astype(np.float32)
    values[::7] = values[0]  # ties too
    got = np.sort(values[dedup._largest(values, 512)])
    assert np.array_equal(got, np.sort(values)[-512:])


def test_upscaled_warp_maps_the_same_points():
    """A 64 px map between pixel indices, taken to SIDE px, moves pixel centres to the same places."""
    warp = np.float32([[0.91, 0.02, 3.4], [-0.01, 0.93, -2.2]])
    big = dedup._upscaled(warp)
    r = dedup.SIDE / dedup.COARSE
    for x, y in [(0, 0), (10.5, 40), (63, 63)]:
        small = warp @ np.float32([x, y, 1])  # index coordinates at 64 px
        centre = big @ np.float32([r * (x + 0.5) - 0.5, r * (y + 0.5) - 0.5, 1])
        np.testing.assert_allclose(centre, r * (small + 0.5) - 0.5, atol=1e-4)


def test_thumbnails_rebuilt_from_grays_match_the_stored_ones(assets):
    index = FingerprintIndex()
    for img in assets:
        index.add(fingerprint(img))
    arrays = index.arrays()
    rebuilt = FingerprintIndex.from_arrays(arrays["rings"], arrays["grays"], index.labels)
    np.testing.assert_allclose(rebuilt.arrays()["thumbs"], arrays["thumbs"], atol=1e-6)


def test_copies_found_past_the_ring_pool(assets):
    """Over POOL entries only the ring pool is scored: copies of indexed images are still found, turned,
    cropped and resized, and the samples that are not indexed are not taken for copies."""
    rng = np.random.default_rng(11)
    refs, others = assets[:8], assets[8:]
    index = FingerprintIndex()
    for i, img in enumerate(refs):
        index.add(fingerprint(img), f"ref{i}")
    for i in range(dedup.POOL + 300):
        index.add(fingerprint(_distractor(rng)), f"noise{i}")
    assert len(index) > dedup.POOL
    for i, img in enumerate(refs):
        for k in (i % 8, (i + 3) % 8):
            m = index.match(fingerprint(hard_copy(img, rng, k)))
            assert m.label == f"ref{i}" and m.similarity > 0.89, (i, k, m)
    for img in others:
        assert index.match(fingerprint(img)).similarity < 0.89


def test_exact_copy_of_a_noise_like_frame_is_found():
    """A frame of fine noise (as a tiny random pipeline renders) decorrelates at any zoom but 1: its
    exact copy must still be found."""
    rng = np.random.default_rng(5)
    img = cv2.resize(rng.integers(0, 256, (64, 64, 3), np.uint8), (128, 128), interpolation=cv2.INTER_NEAREST)
    index = FingerprintIndex()
    index.add(fingerprint(img), "noise")
    m = index.match(fingerprint(img.copy()))
    assert m.label == "noise" and m.similarity > 0.99
