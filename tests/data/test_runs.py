"""Opening runs and selecting rows: defaults (kept, ok), where / score / predicate filters, errors."""

from __future__ import annotations

import pytest

from dermgen.data.runs import Selection, make_selection, open_run
from dermgen.errors import ConfigError, StoreError


def test_tiny_run_selects_every_kept_row_with_labels(tiny_run):
    run = open_run(tiny_run)
    index = run.select()
    summary = __import__("json").loads((tiny_run / "summary.json").read_text())
    assert len(index) == summary["kept_total"] == 16
    assert len({r["sample_id"] for r in index.records}) == 16
    for r in index.records:
        assert r["label_id"] == {"benign": 0, "malignant": 1}[r["label"]]
        assert r["image_path"].startswith("images/kept/")
        assert "image" not in r  # no bytes in the index
    assert sum(len(u) for u in index.units) == 16


def test_default_selection_is_kept_ok_rows_with_an_image(crafted_run, crafted_selected):
    index = open_run(crafted_run).select()
    ids = {r["sample_id"] for r in index.records}
    assert len(index) == crafted_selected
    assert "e1-0000002" not in ids  # dropped
    assert "e1-0000004" not in ids  # failed


def test_include_dropped_adds_only_dropped_rows_whose_png_was_saved(crafted_run, crafted_selected):
    index = open_run(crafted_run).select(Selection(include_dropped=True))
    ids = {r["sample_id"] for r in index.records}
    assert "e1-0000002" in ids  # dropped, image saved
    assert "e1-0000003" not in ids  # dropped, no image
    assert "e1-0000004" not in ids  # failed
    assert len(index) == crafted_selected + 1


def test_where_scalar_list_and_list_columns(crafted_run):
    run = open_run(crafted_run)
    euler = run.select(make_selection(where={"sampler": "Euler"}))
    assert {r["sample_id"] for r in euler.records} == {"e1-0000001", "e1-0000006", "e2-0000001"}
    two = run.select(make_selection(where={"entry_id": ["e1", "e2"], "sampler": ["PLMS"]}))
    assert {r["sample_id"] for r in two.records} == {"e1-0000005", "e2-0000002"}
    tagged = run.select(make_selection(where={"tags": "b"}))
    assert {r["sample_id"] for r in tagged.records} == {"e1-0000001", "e1-0000005"}
    steps = run.select(make_selection(where={"steps": [21, 23]}))
    assert {r["sample_id"] for r in steps.records} == {"e2-0000001", "e2-0000003"}


def test_score_bounds_exclude_null_scores(crafted_run):
    run = open_run(crafted_run)
    low = run.select(make_selection(max_scores={"blur": 0.35}))
    assert {r["sample_id"] for r in low.records} == {"e1-0000000", "e1-0000006", "e2-0000000", "e2-0000001"}
    band = run.select(make_selection(min_scores={"blur": 0.3}, max_scores={"blur": 0.5}))
    assert {r["sample_id"] for r in band.records} == {"e1-0000001", "e1-0000006", "e2-0000002"}


def _odd_index(row: dict) -> bool:
    return row["index"] % 2 == 1


def test_predicate_on_the_row_dict(crafted_run):
    index = open_run(crafted_run).select(make_selection(where={"entry_id": "e3"}, predicate=_odd_index))
    assert len(index) == 35
    assert all(r["index"] % 2 == 1 for r in index.records)


def test_units_follow_row_groups(crafted_run):
    index = open_run(crafted_run).select(make_selection(where={"entry_id": "e3"}))
    assert [(u.row_group, len(u)) for u in index.units] == [(0, 64), (1, 6)]
    shard, rg, row = index.locations[64]
    assert (rg, row) == (1, 0)
    assert open_run(crafted_run).read_image_bytes(shard, rg, [row])[0][:8] == b"\x89PNG\r\n\x1a\n"


def test_custom_label_map(crafted_run):
    index = open_run(crafted_run, label_map={"malignant": 0, "benign": 1}).select()
    assert {r["label"]: r["label_id"] for r in index.records} == {"benign": 1, "malignant": 0}


def test_io_store_and_arrow_read_the_same(crafted_run):
    a = open_run(crafted_run, io="arrow").select()
    b = open_run(crafted_run, io="store").select()
    assert [r["sample_id"] for r in a.records] == [r["sample_id"] for r in b.records]
    shard, rg, row = a.locations[0]
    assert a.run.read_image_bytes(shard, rg, [row]) == b.run.read_image_bytes(shard, rg, [row])


def test_bad_selection_names_the_field():
    with pytest.raises(ConfigError, match="where.*unknown column 'colour'"):
        make_selection(where={"colour": "red"})
    with pytest.raises(ConfigError, match="unknown score 'sharp'"):
        make_selection(min_scores={"sharp": 0.1})


def test_missing_run_and_empty_run(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="no committed shards"):
        open_run(tmp_path / "empty")


def test_unknown_label_in_run_fails_loudly(crafted_run):
    with pytest.raises(ConfigError, match="label 'malignant' maps to no class"):
        open_run(crafted_run, label_map={"benign": 0}).select()
