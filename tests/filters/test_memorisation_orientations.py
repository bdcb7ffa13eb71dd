"""Copies of reference images in any of the eight orientations, resized, cropped, re-encoded: dropped.

Uses only the 12 downscaled kept samples in tests/assets/memorisation (a clone tests itself).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dermgen.filters import build_filter
from dermgen.filters.dedup import (
    DuplicateScorer,
    FingerprintIndex,
    fingerprint,
    iter_image_files,
    orient,
    read_rgb,
    unorient,
)
from dermgen.filters.reference_index import load_reference_index
from filterlab.copies import hard_copy

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "memorisation"
N_REFS = 8  # the first 8 assets are references, the other 4 are "other samples"


@pytest.fixture(scope="module")
def assets() -> list[tuple[str, np.ndarray]]:
    files = iter_image_files(ASSETS)
    assert len(files) == 12
    return [(f.name, read_rgb(f)) for f in files]


@pytest.fixture(scope="module")
def ref_dir(assets, tmp_path_factory) -> Path:
    import cv2

    d = tmp_path_factory.mktemp("refs")
    for name, img in assets[:N_REFS]:
        cv2.imwrite(str(d / name), img[..., ::-1])
    return d


def test_orient_is_the_dihedral_group():
    a = np.arange(12).reshape(3, 4)
    images = {orient(a, k).tobytes() + bytes(orient(a, k).shape) for k in range(8)}
    assert len(images) == 8  # eight distinct elements
    for k in range(8):
        assert np.array_equal(unorient(orient(a, k), k), a)


def test_every_orientation_of_every_reference_is_dropped_as_memorisation(
    assets, ref_dir, monkeypatch, tmp_path
):
    monkeypatch.setenv("DERMGEN_CACHE", str(tmp_path / "cache"))
    flt = build_filter("default", reference_dir=ref_dir)
    rng = np.random.default_rng(17)
    missed = []
    for name, img in assets[:N_REFS]:
        for k in range(8):
            copy = hard_copy(img, rng, k)
            res = flt.evaluate(copy, overrides={"duplicate": None})
            if "memorisation" not in " ".join(res.reasons):
                missed.append((name, k, res.scores["memorisation"]))
            flt.reset()
    assert not missed, missed
    nearest = flt.memorisation.nearest(hard_copy(assets[2][1], rng, 5))
    assert nearest[0] > 0.89 and nearest[1].endswith(assets[2][0])


def test_other_samples_are_not_taken_for_references(assets, ref_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("DERMGEN_CACHE", str(tmp_path / "cache"))
    flt = build_filter("default", reference_dir=ref_dir)
    scores = [flt.memorisation.score(img) for _, img in assets[N_REFS:]]
    assert max(scores) < 0.89, scores


def test_duplicates_across_orientations_and_both_crop_directions(assets):
    d = DuplicateScorer()
    rng = np.random.default_rng(3)
    for _, img in assets[:6]:
        d.add(hard_copy(img, rng, int(rng.integers(8))))  # the index holds turned, cropped copies
    for _, img in assets[:6]:
        assert d.score(img) > 0.89  # the original (a wider field than the indexed crop) is found
    for _, img in assets[6:]:
        assert d.score(img) < 0.89


def test_reference_index_is_cached_by_content(ref_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("DERMGEN_CACHE", str(tmp_path / "cache"))
    first = load_reference_index(ref_dir)
    again = load_reference_index(ref_dir)
    assert not first.cached and again.cached and first.sha256 == again.sha256
    assert len(again) == N_REFS and again.index.labels == first.index.labels
    # the cache holds the pre-scan templates made ahead: the same as those made on the fly
    fresh = FingerprintIndex.from_arrays(
        **{k: v for k, v in again.index.arrays().items()}, labels=again.index.labels
    )
    np.testing.assert_array_equal(again.index.arrays(pre=True)["pre"], fresh.arrays(pre=True)["pre"])
    fp = fingerprint(read_rgb(ref_dir / again.index.labels[0]))
    assert again.index.match(fp).similarity > 0.99
    (ref_dir / again.index.labels[0]).touch()  # same content: same hash
    assert load_reference_index(ref_dir).cached
    import shutil

    shutil.copy(ref_dir / again.index.labels[0], ref_dir / "extra.png")
    try:
        changed = load_reference_index(ref_dir)
        assert not changed.cached and changed.sha256 != first.sha256 and len(changed) == N_REFS + 1
    finally:
        (ref_dir / "extra.png").unlink()


def test_index_from_arrays_checks_lengths():
    with pytest.raises(ValueError, match="disagree"):
        FingerprintIndex.from_arrays(
            np.zeros((2, 3, 36), np.float32), np.zeros((1, 128, 128), np.uint8), ["a"]
        )
    with pytest.raises(ValueError, match="pre 2"):
        FingerprintIndex.from_arrays(
            np.zeros((1, 3, 36), np.float32),
            np.zeros((1, 128, 128), np.uint8),
            ["a"],
            np.zeros((2, 576), np.float16),
        )


def test_a_stale_cache_is_replaced(ref_dir, monkeypatch, tmp_path):
    """A cache written by an older fingerprint version is rebuilt once and then read back, not rebuilt
    on every load."""
    import json

    monkeypatch.setenv("DERMGEN_CACHE", str(tmp_path / "cache"))
    first = load_reference_index(ref_dir)
    meta_path = tmp_path / "cache" / "memorisation" / first.sha256 / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "version": meta["version"] - 1}))
    rebuilt = load_reference_index(ref_dir)
    assert not rebuilt.cached and len(rebuilt) == N_REFS
    assert json.loads(meta_path.read_text())["version"] == meta["version"]
    assert load_reference_index(ref_dir).cached
