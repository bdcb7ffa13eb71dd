"""filter_folder / filter_images end to end: Parquet rows, columns, unreadable files, duplicates."""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from dermgen.filters import SCORE_NAMES, build_filter
from dermgen.filters.standalone import OUTPUT_SCHEMA, filter_folder, filter_images
from filterlab import noise


def _write(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, rgb[..., ::-1])
    assert ok
    path.write_bytes(buf.tobytes())


@pytest.fixture()
def folder(tmp_path, small_image, large_image):
    root = tmp_path / "in"
    _write(root / "a_clean.png", small_image)
    _write(root / "b" / "clean_large.jpg", large_image)
    _write(root / "b" / "inked.png", noise.make_noisy(small_image, "ink", "heavy", "sa"))
    _write(root / "c_blank.webp", np.zeros((128, 128, 3), np.uint8))
    _write(root / "d_copy.jpeg", noise.near_copy(small_image, noise.rng_for("sa"), "jpeg"))
    (root / "e_broken.png").write_bytes(b"\x89PNG not really")
    (root / "readme.txt").write_text("ignored")
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_filter_folder_writes_one_row_per_image(folder, tmp_path, workers):
    out = tmp_path / "out" / "scores.parquet"
    summary = filter_folder(str(folder), str(out), workers=workers)
    assert summary["images"] == 6 and summary["unreadable"] == 1
    table = pq.read_table(out)
    assert table.schema.equals(OUTPUT_SCHEMA)
    assert table.column_names == ["path", "kept", "drop_reasons", *SCORE_NAMES, "skin_tone"]
    rows = {r["path"]: r for r in table.to_pylist()}
    assert list(rows) == sorted(rows)  # sorted relative paths
    assert rows["a_clean.png"]["kept"] and rows["b/clean_large.jpg"]["kept"]
    assert any(r.startswith("ink>") for r in rows["b/inked.png"]["drop_reasons"])
    assert not rows["c_blank.webp"]["kept"] and rows["c_blank.webp"]["off_domain"] == pytest.approx(1.0)
    assert rows["d_copy.jpeg"]["drop_reasons"] == ["duplicate>0.89"]
    broken = rows["e_broken.png"]
    assert not broken["kept"] and broken["drop_reasons"] == ["unreadable"]
    assert all(broken[n] is None for n in SCORE_NAMES)
    assert rows["a_clean.png"]["memorisation"] is None and rows["a_clean.png"]["clip"] is None
    assert summary["kept"] == 2 and summary["reasons"]["unreadable"] == 1


def test_filter_folder_with_reference_dir(folder, tmp_path, small_image):
    refs = tmp_path / "refs"
    _write(refs / "x" / "ref.png", small_image)
    out = tmp_path / "s.parquet"
    filter_folder(folder, out, reference_dir=refs, workers=1)
    rows = {r["path"]: r for r in pq.read_table(out).to_pylist()}
    assert "memorisation>0.89" in rows["a_clean.png"]["drop_reasons"]
    assert rows["b/clean_large.jpg"]["kept"]


def test_filter_images_from_arrays_with_entry_overrides(small_image):
    inked = noise.make_noisy(small_image, "ink", "heavy", "fi")
    items = [("one", small_image), ("two", inked), ("three", None)]
    # blue marker arcs: ink, and a patch of vivid blue (smear); the entry turns both off
    summary = filter_images(items, None, entry_overrides={"two": {"ink": None, "smear": None}})
    rows = {r["path"]: r for r in summary["rows"]}
    assert rows["one"]["kept"] and rows["two"]["kept"]
    assert rows["three"]["drop_reasons"] == ["unreadable"]
    flt = build_filter("none")
    summary = filter_images([("one", small_image)], None, flt=flt)
    assert summary["kept"] == 1 and summary["rows"][0]["ink"] is None


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        filter_folder(tmp_path / "nope", tmp_path / "o.parquet")


@pytest.mark.parametrize("workers", [1, 2])
def test_filter_images_streams_its_input(small_image, tmp_path, workers):
    """Items are pulled lazily: never more than the prefetch window ahead of the decisions, and rows go
    to the Parquet file in batches (keep_rows=False keeps none in memory)."""
    from dermgen.filters import standalone

    pulled = []
    n = 3 * workers * standalone.PREFETCH + 5

    def items():
        for i in range(n):
            pulled.append(i)
            yield f"img{i:03d}", small_image

    window = workers * standalone.PREFETCH if workers > 1 else 1
    seen = []

    class Spy(dict):  # entry_overrides is looked up once per image, when it is decided
        def get(self, key, default=None):
            seen.append(len(pulled))
            return default

    out = tmp_path / "s.parquet"
    summary = standalone.filter_images(items(), out, entry_overrides=Spy(), workers=workers, keep_rows=False)
    assert "rows" not in summary and summary["images"] == n
    assert all(p - i <= window for i, p in enumerate(seen, start=1)), seen
    assert pq.read_table(out).num_rows == n
