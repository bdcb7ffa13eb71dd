"""The filter inside a generation run: scores in every row, dropped images kept for audit, kept targets
met by top-up shards, and the cap with its shortfall report (issue 3)."""

import json

import pyarrow.parquet as pq
from support import REPO_ROOT, generate_run

from dermgen.cli import main

SMOKE = str(REPO_ROOT / "manifests" / "smoke.yaml")
# The random-weight tiny model renders noise, which the default filter rightly calls off-domain. These
# overrides switch off the checks noise always fails and keep about half of the images by contrast.
HALF = {
    "ink": None,
    "hair": None,
    "ruler": None,
    "off_domain": None,
    "smear": None,
    "lesion_area": None,
    "lesion_offcentre": None,
    "contrast": 0.441,
}


def rows_of(out):
    return [r for p in sorted((out / "shards").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_topup_until_kept_targets_are_met(tmp_path):
    out = tmp_path / "run"
    summary = generate_run(out, manifest=SMOKE, filter="default", filter_overrides=HALF, shard_size=4)
    rows = rows_of(out)
    for label in ("benign", "malignant"):
        assert summary["labels"][label]["kept"] >= 4 and summary["labels"][label]["shortfall"] == 0
    assert summary["complete"] and summary["generated"] > 8  # extra samples replaced dropped ones
    dropped = [r for r in rows if not r["kept"]]
    assert dropped and all(r["drop_reasons"] == ["contrast<0.441"] for r in dropped)
    assert all(r["scores"]["contrast"] is not None and r["scores"]["blur"] is not None for r in rows)
    assert all(r["image"]["path"].startswith("images/dropped/") for r in dropped)
    assert all((out / r["image"]["path"]).exists() for r in rows)
    assert len({r["sample_id"] for r in rows}) == len(rows)
    assert any(r["index"] >= 4 for r in rows)  # top-up samples continue after the planned ones


def test_cap_stops_generation_and_reports_the_shortfall(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "generate",
            "--manifest",
            SMOKE,
            "--output",
            str(out),
            "--no-ray",
            "--cap-factor",
            "2",
            "--shard-size",
            "4",
            "--batch-size",
            "4",
            "--filter-override",
            "contrast=0.9",
            "--no-save-dropped",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "SHORTFALL" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["complete"]
    for entry in summary["entries"].values():
        assert entry["generated"] == 8 and entry["kept"] == 0 and entry["shortfall"] == 4  # cap = 2 x 4
        assert entry["drop_reasons"]["contrast<0.9"] == 8
    rows = rows_of(out)
    assert len(rows) == 16 and not any(r["kept"] for r in rows)
    assert all(r["image"] is None for r in rows)  # --no-save-dropped
    assert not (out / "images" / "dropped").exists()


def test_per_entry_overrides_apply(tmp_path):
    import yaml

    doc = yaml.safe_load(open(SMOKE))
    doc["entries"][0]["filter"] = {"contrast": None}  # benign: everything passes
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    overrides = dict(HALF, contrast=0.9)  # malignant: nothing passes
    out = tmp_path / "run"
    summary = generate_run(
        out, manifest=str(manifest), filter="default", filter_overrides=overrides, cap_factor=1.0
    )
    assert summary["entries"]["benign_mole"]["kept"] == 4
    assert summary["entries"]["malignant_mole"]["kept"] == 0
