"""`dermgen filter calibrate`: fit thresholds to a person's labels, write a profile, use it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import pytest

from dermgen.cli import main as cli_main
from dermgen.config import make_config
from dermgen.errors import ConfigError
from dermgen.filters import build_filter
from dermgen.filters.calibrate import (
    MIN_LABELS,
    CalibrationError,
    fit_thresholds,
    load_labels,
    load_profile,
    write_profile,
)
from dermgen.filters.dedup import read_rgb
from dermgen.filters.rule import FilterConfig

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "tests" / "assets"
sys.path.insert(0, str(ROOT / "benchmarks"))

import realistic_noise as rn  # noqa: E402


def _scored_labels(tmp_path: Path) -> Path:
    """30 labels with given scores: the person keeps ink up to 0.05 and drops from 0.06."""
    rows = []
    for i in range(15):
        rows.append({"path": f"k{i}.png", "kept": True, "scores": {"ink": 0.05 * i / 14, "tint": 0.1}})
    for i in range(15):
        rows.append({"path": f"d{i}.png", "label": "drop", "scores": {"ink": 0.06 + 0.01 * i, "tint": 0.1}})
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"labels": rows}))
    return path


def test_fit_moves_the_ink_bound_to_the_persons_line(tmp_path):
    labels = load_labels(_scored_labels(tmp_path))
    fit = fit_thresholds(labels)
    assert fit.agreement_before < 1.0  # the default ink bound (0.035) drops kept images at 0.04, 0.05
    assert fit.agreement_after == 1.0
    assert 0.05 < fit.after.ink_max < 0.06
    assert fit.after.tint_max == FilterConfig().tint_max  # the labels say nothing about tint: unchanged


def test_too_few_labels_are_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "few.json"
    path.write_text(json.dumps({f"a{i}.png": "keep" for i in range(8)} | {"b.png": "drop"}))
    with pytest.raises(
        CalibrationError, match=f"too few labels.*9 .*8 kept, 1 dropped.*at least {MIN_LABELS}"
    ):
        fit_thresholds(load_labels(path))


def test_bad_labels_name_the_problem(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"path": "a.png", "kept": "maybe"}]))
    with pytest.raises(CalibrationError, match="a.png.*'maybe'"):
        load_labels(path)
    path.write_text("{not json")
    with pytest.raises(CalibrationError, match="cannot read labels file"):
        load_labels(path)


def test_cli_fits_real_images_and_the_profile_drives_the_filter(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    labels = []
    kept_assets = sorted((ASSETS / "filter2").glob("*.png"))
    for p in kept_assets:
        labels.append({"path": str(p), "kept": True})
    for p in sorted((ASSETS / "derm-t2im-discarded").glob("*.png")):
        labels.append({"path": str(p), "kept": False})
    for p in kept_assets[:5]:  # the person also drops real-like marker loops
        out = folder / f"loops-{p.name}"
        cv2.imwrite(str(out), rn.make_real_like(read_rgb(p), "ink_loops", p.name)[..., ::-1])
        labels.append({"path": out.name, "kept": False})
    (folder / "labels.json").write_text(json.dumps(labels))
    profile = tmp_path / "profile.yaml"

    assert cli_main(["filter", "calibrate", str(folder / "labels.json"), "--output", str(profile)]) == 0
    printed = capsys.readouterr().out
    assert "agreement with the labels: before" in printed and "ink_max" in printed

    config = load_profile(profile)
    flt = build_filter(str(profile))
    assert flt.config == config
    decisions = []
    for row in labels:
        path = Path(row["path"]) if Path(row["path"]).is_absolute() else folder / row["path"]
        flt.reset()
        decisions.append(flt.evaluate(read_rgb(path)).kept == row["kept"])
    after = float(printed.split("after ")[1].split()[0])
    assert sum(decisions) / len(decisions) == pytest.approx(after, abs=1e-3)
    assert after >= float(printed.split("before ")[1].split(",")[0])


def test_cli_refuses_too_few_labels(tmp_path, capsys):
    path = tmp_path / "few.json"
    path.write_text(json.dumps([{"path": "x.png", "kept": True}]))
    assert cli_main(["filter", "calibrate", str(path), "--output", str(tmp_path / "p.yaml")]) == 2
    assert "too few labels" in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists()


def test_generate_config_accepts_a_profile_and_rejects_a_bad_one(tmp_path):
    profile = write_profile(FilterConfig(ink_max=0.05), tmp_path / "p.yaml")
    cfg = make_config(filter=str(profile))
    assert Path(cfg.filter) == profile.resolve()
    assert build_filter(cfg.filter).config.ink_max == 0.05
    bad = tmp_path / "bad.yaml"
    bad.write_text("dermgen_filter_profile: 1\nthresholds: {ink_max: 7}\n")
    with pytest.raises(ConfigError, match="bad.yaml.*ink_max"):
        make_config(filter=str(bad))
    with pytest.raises(ConfigError, match="profile"):
        make_config(filter="strict")


def test_report_labels_resolve_paths_against_the_run_and_keep_their_scores(tmp_path):
    """The report's download: paths are keys in the run (read only when a label has no scores)."""
    run = tmp_path / "run"
    (run / "images").mkdir(parents=True)
    rows = [{"sample_id": "s0", "path": "images/a.png", "kept": True, "scores": {"ink": 0.01, "blur": None}}]
    rows.append({"sample_id": "s1", "path": "images/b.png", "kept": False, "scores": {"ink": None}})
    rows.append({"sample_id": "s2", "path": None, "kept": False, "scores": {"ink": 0.4}})
    labels_file = tmp_path / "downloads" / "labels-x.json"
    labels_file.parent.mkdir()
    labels_file.write_text(json.dumps({"dermgen_labels": 1, "run": str(run), "labels": rows}))
    labels = load_labels(labels_file)
    assert [lb.path for lb in labels] == [
        str(run / "images/a.png"),
        str(run / "images/b.png"),
        str(run / "s2"),
    ]
    assert labels[0].scores == {"ink": 0.01} and labels[1].scores is None and labels[2].scores == {"ink": 0.4}
    elsewhere = tmp_path / "l2.json"
    elsewhere.write_text(json.dumps({"run": str(tmp_path / "gone"), "labels": rows[:1]}))
    assert load_labels(elsewhere)[0].path == str(tmp_path / "images/a.png")  # no such run: the file's folder
