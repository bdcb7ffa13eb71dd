"""The filter is part of a run's identity: run.json records the effective filter, a resume with another
threshold, profile or reference set exits 4 naming the change, and `dermgen filter RUN --filter` re-decides
a finished run from its stored images without rendering anything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dermgen.cli import main
from dermgen.filters.calibrate import write_profile
from dermgen.filters.identity import SCORERS_VERSION, filter_changes
from dermgen.filters.rule import FilterConfig

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "manifests" / "derm_t2im_6k.yaml"


def _args(out: Path, profile: Path, reference: Path) -> list[str]:
    return [
        "generate", "--manifest", str(MANIFEST), "--model", "tiny", "--limit", "4", "--size", "64",
        "--shard-size", "4", "--batch-size", "4", "--no-ray", "--filter", str(profile),
        "--reference", str(reference), "--output", str(out),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def profiled_run(tmp_path_factory, samples_dir) -> tuple[Path, Path, Path]:
    """A 4-image tiny run filtered by a keep-everything profile, with a two-image reference set."""
    root = tmp_path_factory.mktemp("identity")
    profile = write_profile(FilterConfig.disabled(), root / "keep_all.yaml")
    reference = root / "reference"
    reference.mkdir()
    for src in sorted(samples_dir.rglob("*.png"))[:2]:
        shutil.copy(src, reference / src.name)
    out = root / "run"
    assert main(_args(out, profile, reference)) == 0
    return out, profile, reference


def test_run_json_records_the_effective_filter(profiled_run):
    out, profile, reference = profiled_run
    record = json.loads((out / "run.json").read_text())["filter"]
    assert record["spec"] == "profile" and record["profile"] == str(profile)
    assert len(record["profile_sha256"]) == 64
    assert record["thresholds"]["ink_max"] is None and set(record["thresholds"]) >= {"blur_max", "clip_min"}
    assert record["scorers_version"] == SCORERS_VERSION and "ink" in record["scorers"]
    assert "clip" not in record["scorers"] and record["clip_model"] is None
    assert (
        len(record["reference_sha256"]) == 64
        and len(list(reference.iterdir())) == 2
        and record["reference_dir"] == str(reference)
    )


def _copy(profiled_run, tmp_path) -> tuple[Path, Path, Path]:
    out, profile, reference = profiled_run
    dst = tmp_path / "run"
    shutil.copytree(out, dst, ignore=shutil.ignore_patterns("report"))
    shutil.copy(profile, tmp_path / profile.name)
    shutil.copytree(reference, tmp_path / "reference")
    run_json = json.loads((dst / "run.json").read_text())  # the copies live elsewhere: same content
    run_json["binding"]["filter"]["spec"] = str(tmp_path / profile.name)
    run_json["binding"]["filter"]["reference_dir"] = str(tmp_path / "reference")
    run_json["filter"]["profile"] = str(tmp_path / profile.name)
    run_json["filter"]["reference_dir"] = str(tmp_path / "reference")
    (dst / "run.json").write_text(json.dumps(run_json))
    return dst, tmp_path / profile.name, tmp_path / "reference"


def test_resume_with_the_same_filter_goes_on(profiled_run, tmp_path, capsys):
    out, profile, reference = _copy(profiled_run, tmp_path)
    assert main(_args(out, profile, reference)) == 0


def test_resume_with_an_edited_profile_exits_4_naming_it(profiled_run, tmp_path, capsys):
    out, profile, reference = _copy(profiled_run, tmp_path)
    before = (out / "run.json").read_bytes()
    write_profile(FilterConfig.disabled().model_copy(update={"ink_max": 0.5}), profile)
    assert main(_args(out, profile, reference)) == 4
    err = capsys.readouterr().err
    assert "filter profile_sha256" in err and "filter thresholds.ink_max: None -> 0.5" in err
    assert (out / "run.json").read_bytes() == before


def test_resume_with_another_threshold_exits_4_naming_it(profiled_run, tmp_path, capsys):
    out, profile, reference = _copy(profiled_run, tmp_path)
    assert main([*_args(out, profile, reference), "--filter-override", "blur=0.3"]) == 4
    assert "'blur': 0.3" in capsys.readouterr().err


def test_resume_with_a_changed_reference_set_exits_4_naming_it(profiled_run, tmp_path, capsys, samples_dir):
    out, profile, reference = _copy(profiled_run, tmp_path)
    first = sorted(reference.iterdir())[0]
    first.write_bytes(sorted(samples_dir.rglob("*.png"))[5].read_bytes())
    assert main(_args(out, profile, reference)) == 4
    assert "filter reference_sha256" in capsys.readouterr().err


def test_filter_changes_names_nested_fields():
    old = {"spec": "default", "thresholds": {"ink_max": 0.1, "blur_max": 0.5}}
    new = {"spec": "default", "thresholds": {"ink_max": 0.2, "blur_max": 0.5}, "clip_model": "m"}
    assert filter_changes(old, new) == ["clip_model: None -> 'm'", "thresholds.ink_max: 0.1 -> 0.2"]
    assert filter_changes(old, dict(old)) == []


def test_filter_redecides_a_finished_run_with_another_profile(profiled_run, tmp_path, capsys):
    out, _, _ = profiled_run
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    drop_all = write_profile(
        FilterConfig.disabled().model_copy(update={"contrast_min": 1.0}), tmp_path / "d.yaml"
    )
    decisions = tmp_path / "decisions.parquet"
    code = main(["filter", str(out), "--output", str(decisions), "--filter", str(drop_all), "--workers", "1"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["filter"]["thresholds"]["contrast_min"] == 1.0 and summary["filter"]["spec"] == "profile"
    rows = pq.read_table(decisions).to_pylist()
    assert len(rows) == 4 and not any(r["kept"] for r in rows)
    assert all(any(x.startswith("contrast") for x in r["drop_reasons"]) for r in rows)
    assert all(r["path"].startswith("images/") for r in rows)
    # the run was kept as it was: nothing rendered, nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == files
    keep_all = json.loads((out / "run.json").read_text())["filter"]["profile"]
    assert main(["filter", str(out), "--output", str(decisions), "--filter", keep_all, "--workers", "1"]) == 0
    assert all(r["kept"] for r in pq.read_table(decisions).to_pylist())


def test_a_new_score_is_a_new_filter_identity():
    """A run recorded before a score existed names the new score and its bound when resumed."""
    from dermgen.filters.identity import effective_filter
    from dermgen.filters.rule import DEFAULT_THRESHOLDS

    now = effective_filter("default")
    before = json.loads(json.dumps(now))
    before["scorers"] = [n for n in before["scorers"] if n != "smear"]
    del before["thresholds"]["smear_max"]
    changes = filter_changes(before, now)
    assert f"thresholds.smear_max: None -> {DEFAULT_THRESHOLDS['smear_max']!r}" in changes
    assert any(c.startswith("scorers: ") and "'smear'" in c for c in changes), changes
