"""Copies of reference images in any of the eight orientations, resized, cropped, re-encoded: dropped.

Uses only the 12 downscaled kept samples in tests/assets/memorisation (a clone tests itself).
"""

from __future__ import annotations

from dataclasses import replace
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


def test_originals_of_indexed_crops_are_found(samples_dir):
    """The other way round, as in a run's near-duplicate check (either image may be a crop of the other):
    a two-way index holds one hard copy of each of the 120 kept samples (turned, cropped up to 10% per
    side, resized, colour-shifted, JPEG 75) and every original finds its own copy."""
    files = iter_image_files(samples_dir)
    assert len(files) == 120
    originals = [read_rgb(f) for f in files]
    rng = np.random.default_rng(11)
    index = FingerprintIndex(both_ways=True)
    for n, img in enumerate(originals):
        index.add(fingerprint(hard_copy(img, rng, n % 8)), files[n].name)
    missed = []
    for f, img in zip(files, originals, strict=True):
        m = index.match(fingerprint(img))
        if m.similarity <= 0.89 or m.label != f.name:
            missed.append((f.name, m.label, round(m.similarity, 3)))
    assert not missed, missed


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
    with pytest.raises(ValueError, match="owners"):  # a label without a row
        FingerprintIndex.from_arrays(
            np.zeros((0, 3, 36), np.float32), np.zeros((0, 128, 128), np.uint8), ["a"], owners=np.zeros(0)
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


def _uneven_crop(img: np.ndarray, k: int, along_x: bool, zoom: float) -> np.ndarray:
    """``img`` with 10% cut from two opposite sides only (aspect 1.25), resized, turned by ``k``, JPEG."""
    import cv2

    h, w = img.shape[:2]
    out = img[:, w // 10 : w - w // 10] if along_x else img[h // 10 : h - h // 10]
    out = cv2.resize(
        out, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_CUBIC
    )
    ok, buf = cv2.imencode(".jpg", orient(out, k)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def test_unevenly_cropped_copies_are_matched_by_their_central_square(assets):
    """A copy cut on two opposite sides only is squashed when made square; its central square is an even
    zoom of the original and is matched too."""
    index = FingerprintIndex()
    for name, img in assets[:N_REFS]:
        index.add(fingerprint(img), name)
    square = fingerprint(assets[0][1])
    assert square.square is None  # a square image needs no second look
    missed = []
    for n, (name, img) in enumerate(assets[:N_REFS]):
        for k in (0, 3, 5, 6):
            fp = fingerprint(_uneven_crop(img, k, along_x=(n + k) % 2 == 0, zoom=(0.7, 1.6)[k % 2]))
            assert fp.square is not None and fp.square.gray.shape == fp.gray.shape
            m = index.match(fp)
            if m.similarity <= 0.89 or m.label != name:
                missed.append((name, k, round(m.similarity, 3), m.label))
    assert not missed, missed
    for _, img in assets[N_REFS:]:  # other samples, cut the same way, still match nothing
        assert index.match(fingerprint(_uneven_crop(img, 2, along_x=True, zoom=1.0))).similarity < 0.89


def test_copies_cropped_ten_percent_on_every_side_are_matched(assets):
    """The widest crop the issue names (10% off every side: a zoom of 1.25) in all eight orientations."""
    import cv2

    index = FingerprintIndex()
    for name, img in assets[:N_REFS]:
        index.add(fingerprint(img), name)
    missed = []
    for name, img in assets[:N_REFS]:
        c = img.shape[0] // 10
        for k in range(8):
            z = (0.6, 1.0, 1.5)[k % 3]
            out = cv2.resize(img[c:-c, c:-c], None, fx=z, fy=z, interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", orient(out, k)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
            m = index.match(fingerprint(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]))
            if m.similarity <= 0.89 or m.label != name:
                missed.append((name, k, round(m.similarity, 3)))
    assert not missed, missed


def _widened(img: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``img`` with a strip of ``other`` glued on each side: a 4:3-like frame whose central square is ``img``."""
    w = img.shape[1] * 3 // 16
    return np.ascontiguousarray(np.concatenate([other[:, :w], img, other[:, -w:]], axis=1))


def test_a_non_square_reference_is_also_indexed_by_its_central_square(assets, monkeypatch, tmp_path):
    """A model fine-tuned on centre crops memorises a wide reference's central square: found, by label,
    through a cached index too; the squashed frame alone does not resemble it."""
    import cv2

    refs = tmp_path / "refs"
    refs.mkdir()
    for n, (name, img) in enumerate(assets[:4]):
        cv2.imwrite(str(refs / name), _widened(img, assets[n + 8][1])[..., ::-1])
    monkeypatch.setenv("DERMGEN_CACHE", str(tmp_path / "cache"))
    built, cached = load_reference_index(refs), load_reference_index(refs)
    assert cached.cached and len(cached) == 4 and cached.index.labels == built.index.labels
    assert cached.index.arrays()["owners"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert cached.index.entry(1).square is not None
    rng = np.random.default_rng(5)
    squashed_found = []
    for n, (name, img) in enumerate(assets[:4]):
        copy = fingerprint(hard_copy(img, rng, n + 2))  # the central square, turned, cropped, re-encoded
        for index in (built.index, cached.index):
            m = index.match(copy)
            assert m.similarity > 0.89 and m.label == name and m.index == n, (name, m)
            assert index.match(copy, exclude=n).similarity < 0.89  # both rows of the entry left out
        squashed_only = FingerprintIndex()
        squashed_only.add(replace(fingerprint(_widened(img, assets[n + 8][1])), square=None), name)
        squashed_found.append(round(squashed_only.match(copy).similarity, 3))
    assert sum(s > 0.89 for s in squashed_found) <= 1, squashed_found
    with pytest.raises(ValueError, match="owners"):
        FingerprintIndex.from_arrays(
            **{k: v for k, v in built.index.arrays().items() if k != "owners"},
            labels=built.index.labels,
            owners=np.array([0, 0, 2, 2, 3, 3, 3, 3]),  # entry 1 has no row
        )
