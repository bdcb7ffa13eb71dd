"""`--images parquet`: image bytes only inside the Parquet rows. Every reader gives what it gives for a
files-layout run of the same seed; verify checks the bytes; a run cannot switch layout on resume."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from support import REPO_ROOT, generate_run

from dermgen.errors import PlanMismatchError
from dermgen.hashing import sha256_bytes
from dermgen.rundir import RUN_JSON, RunDir, image_key, shard_key
from dermgen.verify import verify_run

LIMIT = 8


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(files run, parquet run): the same plan and seed, one in each layout."""
    root = tmp_path_factory.mktemp("layouts")
    generate_run(root / "files", limit=LIMIT, images="files")
    generate_run(root / "parquet", limit=LIMIT, images="parquet")
    return root / "files", root / "parquet"


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _images_by_sample(run) -> dict[str, bytes]:
    table = RunDir(run).rows(["sample_id", "image"])
    return {sid: img["bytes"] for sid, img in zip(*table.to_pydict().values(), strict=True)}


def test_parquet_run_has_no_png_objects_and_verifies(runs):
    files, parquet = runs
    rd = RunDir(parquet)
    assert rd.info().images == "parquet" and RunDir(files).info().images == "files"
    assert rd.listing().images == [] and not (parquet / "images").exists()
    rows = rd.rows(["sample_id", "status", "image", "image_sha256"]).to_pylist()
    assert len(rows) >= LIMIT and all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert r["image"]["path"] is None and sha256_bytes(r["image"]["bytes"]) == r["image_sha256"]
    report = verify_run(rd)
    assert report.ok, report.problems
    assert report.images_checked == len(rows)  # every row's bytes checked against image_sha256
    assert len(RunDir(files).listing().images) == len(rows)  # the files layout: one PNG per image


def test_both_layouts_hold_the_same_images(runs):
    files, parquet = runs
    a, b = _images_by_sample(files), _images_by_sample(parquet)
    assert sorted(a) == sorted(b)
    for sid in a:
        assert np.array_equal(_pixels(a[sid]), _pixels(b[sid])), sid


def _tamper_one_image(run) -> str:
    """Flip one byte of the first row's image bytes inside its shard; returns the sample id."""
    rd = RunDir(run)
    sid = rd.shard_ids()[0]
    table = pq.read_table(rd.store.open_input(shard_key(sid)))
    images = table.column("image").to_pylist()
    data = bytearray(images[0]["bytes"])
    data[len(data) // 2] ^= 0xFF
    images[0] = {"bytes": bytes(data), "path": images[0]["path"]}
    i = table.schema.get_field_index("image")
    table = table.set_column(i, table.schema.field(i), pa.array(images, type=table.schema.field(i).type))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    rd.store.put(shard_key(sid), buf.getvalue())
    return table.column("sample_id")[0].as_py()


def test_verify_catches_a_tampered_image_byte_in_the_parquet_layout(runs, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs[1], run)
    sid = _tamper_one_image(run)
    report = verify_run(RunDir(run))
    assert not report.ok
    assert any(sid in p and "do not match image_sha256" in p for p in report.problems), report.problems


def test_verify_catches_pngs_that_do_not_belong_to_the_layout(runs, tmp_path):
    """A PNG object in a parquet-layout run is an orphan; a row that names a PNG object departs from the
    layout. In the files layout a missing PNG is caught."""
    import shutil

    parquet = tmp_path / "parquet"
    shutil.copytree(runs[1], parquet)
    rd = RunDir(parquet)
    row = rd.rows(["sample_id", "label", "attempt_id", "image"]).to_pylist()[0]
    extra = image_key(row["sample_id"], row["label"], row["attempt_id"], True)
    rd.store.put(extra, row["image"]["bytes"])
    problems = verify_run(rd).problems
    assert any(extra in p and "orphaned PNG" in p for p in problems), problems

    files = tmp_path / "files"
    shutil.copytree(runs[0], files)
    gone = RunDir(files).listing().images[0]
    (files / gone).unlink()
    problems = verify_run(RunDir(files)).problems
    assert any(gone in p and "missing" in p for p in problems), problems


def test_resume_with_another_layout_is_refused(runs, tmp_path):
    import shutil

    from dermgen.config import make_config
    from dermgen.run import prepare_run

    def config(output, images):
        return make_config(
            manifest=str(REPO_ROOT / "manifests" / "derm_t2im_6k.yaml"),
            model="tiny",
            output=str(output),
            limit=LIMIT,
            size=64,
            filter="none",
            shard_size=4,
            batch_size=4,
            images=images,
        )

    with pytest.raises(PlanMismatchError, match="images: 'parquet' -> 'files'") as err:
        prepare_run(config(runs[1], "files"))
    assert err.value.exit_code == 4
    with pytest.raises(PlanMismatchError, match="images: 'files' -> 'parquet'"):
        prepare_run(config(runs[0], "parquet"))
    # the same layout resumes with nothing left to do
    assert prepare_run(config(runs[1], "parquet")).resumed_shards == len(RunDir(runs[1]).shard_ids())
    # a run.json written before the layout was recorded is the files layout
    old = tmp_path / "old"
    shutil.copytree(runs[0], old)
    doc = json.loads((old / RUN_JSON).read_text())
    del doc["images"]
    (old / RUN_JSON).write_text(json.dumps(doc))
    assert RunDir(old).info().images == "files"
    assert prepare_run(config(old, "files")).resumed_shards > 0
    with pytest.raises(PlanMismatchError, match="images: 'files' -> 'parquet'"):
        prepare_run(config(old, "parquet"))


def test_torch_loaders_read_the_parquet_layout(runs):
    from dermgen.data.torch_dataset import RunDataset, RunIterableDataset

    files, parquet = RunDataset(runs[0]), RunDataset(runs[1])
    assert [r["sample_id"] for r in parquet.records] == [r["sample_id"] for r in files.records]
    assert len(parquet) >= LIMIT and all(r["image_path"] is None for r in parquet.records)
    for i in range(len(files)):
        (a, la), (b, lb) = files[i], parquet[i]
        assert la == lb and np.array_equal(np.asarray(a), np.asarray(b))
    want = {r["sample_id"]: np.asarray(files[i][0]) for i, r in enumerate(files.records)}
    seen = []
    for item in RunIterableDataset(runs[1], output="dict", image_format="numpy", rank=0, world_size=1):
        assert np.array_equal(item["image"], want[item["sample_id"]]), item["sample_id"]
        seen.append(item["sample_id"])
    assert sorted(seen) == sorted(want)


def test_hugging_face_datasets_read_the_parquet_layout(runs, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from dermgen.data.runs import shard_files

    files, parquet = runs
    assert "(image layout `parquet`)" in (parquet / "README.md").read_text()
    assert "(image layout `files`)" in (files / "README.md").read_text()
    by_card = datasets.load_dataset(str(parquet), split="train", cache_dir=str(tmp_path / "a"))
    by_files = datasets.load_dataset(
        "parquet", data_files=shard_files(parquet), split="train", cache_dir=str(tmp_path / "b")
    )
    want = {sid: _pixels(b) for sid, b in _images_by_sample(files).items()}
    for ds in (by_card, by_files):
        assert isinstance(ds.features["image"], datasets.Image) and ds.num_rows == len(want)
        for row in ds:
            assert np.array_equal(np.asarray(row["image"].convert("RGB")), want[row["sample_id"]])


def test_ray_data_reads_the_parquet_layout(runs, ray_local):
    from dermgen.data.ray_data import read_run

    want = {sid: _pixels(b) for sid, b in _images_by_sample(runs[0]).items()}
    rows = read_run(str(runs[1]), verify_images=True).take_all()
    assert sorted(r["sample_id"] for r in rows) == sorted(want)
    for r in rows:
        assert np.array_equal(r["image"], want[r["sample_id"]])


def test_report_filter_audit_and_inspect_read_the_parquet_layout(runs, tmp_path, capsys):
    from dermgen.audit import audit
    from dermgen.cli import main
    from dermgen.filters.standalone import filter_run
    from dermgen.report import load_run

    files, parquet = runs
    data = {}
    for name, run in (("files", files), ("parquet", parquet)):
        loaded = load_run(RunDir(run).store)
        assert loaded.kept_sheet and not loaded.unreadable.get("kept") and loaded.review
        data[name] = loaded
    assert [t.row["sample_id"] for t in data["parquet"].kept_sheet] == [
        t.row["sample_id"] for t in data["files"].kept_sheet
    ]
    assert main(["report", str(parquet), "--output", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= LIMIT

    a = filter_run(str(files), tmp_path / "f.parquet", workers=1)
    b = filter_run(str(parquet), tmp_path / "p.parquet", workers=1)
    assert a["images"] == b["images"] == len(_images_by_sample(files)) and a["kept"] == b["kept"]
    fa, fb = pq.read_table(tmp_path / "f.parquet"), pq.read_table(tmp_path / "p.parquet")
    assert sorted(fb.column("path").to_pylist()) == sorted(_images_by_sample(parquet))  # by sample id
    assert fa.column("drop_reasons").to_pylist() == fb.column("drop_reasons").to_pylist()

    ref = tmp_path / "ref"
    ref.mkdir()
    for i, png in enumerate(list(_images_by_sample(files).values())[:2]):
        (ref / f"r{i}.png").write_bytes(png)
    sa, sb = audit(str(files), tmp_path / "aa", ref), audit(str(parquet), tmp_path / "ab", ref)
    assert sa["generated"] == sb["generated"]
    sims = [
        sorted(pq.read_table(p / "audit.parquet").column("similarity").to_pylist())
        for p in (tmp_path / "aa", tmp_path / "ab")
    ]
    assert len(sims[1]) == len(_images_by_sample(files))
    assert sims[0] == sims[1] and max(sims[1]) > 0.99  # the two copied references are found

    from dermgen.preprocess import list_sources

    pa_, pb_ = list_sources(files), list_sources(parquet)
    assert [x.name for x in pa_] == [x.name for x in pb_] and len(pb_) == len(_images_by_sample(files))
    assert all(np.array_equal(_pixels(x.data), _pixels(y.data)) for x, y in zip(pa_, pb_, strict=True))

    capsys.readouterr()
    assert main(["inspect", str(parquet), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == "parquet"


def test_parquet_layout_on_s3(s3_bucket, runs):
    """Generated straight into a bucket: no object under images/, verify OK and catches a tampered byte,
    the loaders and the report read it, and the orphan sweep has nothing to do."""
    import boto3

    from dermgen.data.torch_dataset import RunDataset
    from dermgen.report import load_run

    uri = f"s3://{s3_bucket}/run"
    generate_run(uri, limit=LIMIT, images="parquet")
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys and not [k for k in keys if k.startswith("run/images/")]
    assert sum(k.startswith("run/shards/") for k in keys) == len(RunDir(uri).shard_ids())
    rd = RunDir(uri)
    assert rd.info().images == "parquet" and rd.sweep_orphans(rd.info().run_id) == []
    report = verify_run(rd)
    assert report.ok and report.images_checked >= LIMIT, report.problems
    want = {sid: _pixels(b) for sid, b in _images_by_sample(runs[0]).items()}
    ds = RunDataset(uri)
    assert sorted(r["sample_id"] for r in ds.records) == sorted(want)
    for i, r in enumerate(ds.records):
        assert np.array_equal(np.asarray(ds[i][0]), want[r["sample_id"]])
    assert load_run(rd.store).kept_sheet
    sid = _tamper_one_image(uri)
    problems = verify_run(RunDir(uri)).problems
    assert any(sid in p and "do not match image_sha256" in p for p in problems), problems


@pytest.mark.slow
def test_parquet_layout_through_ray_actors(tmp_path, ray_local):
    """The layout reaches the generator actors: no PNG objects, and the run verifies."""
    out = tmp_path / "run"
    summary = generate_run(
        out, limit=4, shard_size=2, batch_size=2, use_ray=True, num_actors=2, images="parquet"
    )
    rd = RunDir(out)
    assert summary["kept_total"] >= 4 and rd.listing().images == [] and not (out / "images").exists()
    report = verify_run(rd)
    assert report.ok and report.images_checked == report.rows, report.problems
