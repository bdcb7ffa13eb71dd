"""Fine-tuning preprocessing: resize/crop, DullRazor hair removal, folder and run inputs, manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from dermgen.errors import ConfigError
from dermgen.preprocess import (
    MANIFEST,
    hair_mask,
    hair_score,
    load_rgb,
    preprocess_source,
    remove_hair,
    resize_center_crop,
)
from filterlab.noise import add_hair, rng_for

SIDE = 256  # hair tests run at 256 px: fast, and the constants scale with the side


def _filter_hair_score(img: np.ndarray) -> float:
    """The filter stage's `hair` score (build_filter when it exists, else the HairScorer it is built from)."""
    try:
        from dermgen.filters import build_filter
    except ImportError:
        return hair_score(img)
    return float(build_filter("default").evaluate(img).scores["hair"])


def _samples(samples_dir: Path, n: int) -> list[np.ndarray]:
    files = sorted(samples_dir.glob("*/*.png"))[:: max(1, 120 // n)][:n]
    return [resize_center_crop(load_rgb(f), SIDE) for f in files]


def _draw_hair(img: np.ndarray, seed: int) -> np.ndarray:
    return add_hair(img, rng_for("preprocess-test", seed), n_hairs=(25, 40), thickness=(0.004, 0.007))


def test_remove_hair_lowers_hair_score_on_drawn_hair(samples_dir):
    before, after, restored = [], [], []
    for k, img in enumerate(_samples(samples_dir, 8)):
        hairy = _draw_hair(img, k)
        fixed = remove_hair(hairy)
        before.append(_filter_hair_score(hairy))
        after.append(_filter_hair_score(fixed))
        # the inpainted image is closer to the hair-free original than the hairy one was
        restored.append(np.abs(fixed.astype(int) - img).mean() / np.abs(hairy.astype(int) - img).mean())
    assert np.mean(before) > 0.03, before  # the drawn hair is really seen as hair
    assert np.mean(after) < 0.2 * np.mean(before), (before, after)
    assert max(after) < 0.01, after
    assert np.mean(restored) < 0.35, restored


def test_remove_hair_leaves_hair_free_images_almost_unchanged(samples_dir):
    clean = [img for img in _samples(samples_dir, 30) if _filter_hair_score(img) == 0.0]
    assert len(clean) >= 8
    for img in clean:
        out = remove_hair(img)
        diff = np.abs(out.astype(int) - img)
        assert diff.mean() < 0.5, diff.mean()
        assert (diff.max(axis=2) > 10).mean() < 0.01


def test_hair_mask_finds_drawn_lines_not_round_dots():
    img = np.full((128, 128, 3), 190, np.uint8)
    cv2.circle(img, (64, 64), 30, (90, 60, 50), -1)  # a lesion: dark but round and large
    dots = img.copy()
    for x in (20, 40, 100):
        cv2.circle(dots, (x, 110), 2, (30, 30, 30), -1)  # small pigment dots
    assert hair_mask(img).sum() == 0
    assert hair_mask(dots).sum() == 0
    lined = img.copy()
    cv2.line(lined, (0, 10), (127, 120), (20, 15, 10), 1, cv2.LINE_AA)
    mask = hair_mask(lined)
    assert mask.sum() > 100
    assert mask[30:100, 30:100].sum() > 0  # across the lesion too
    assert np.array_equal(remove_hair(img), img)


def test_hair_functions_reject_bad_input():
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        remove_hair(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        hair_mask(np.zeros((32, 32, 3), np.float32))


def test_resize_center_crop_keeps_the_centre():
    img = np.zeros((60, 100, 3), np.uint8)
    img[:, 20:80] = 255  # the central 60x60 square is white
    out = resize_center_crop(img, 30)
    assert out.shape == (30, 30, 3)
    assert out.min() > 200
    up = resize_center_crop(np.full((10, 20, 3), 7, np.uint8), 16)
    assert up.shape == (16, 16, 3) and int(up.mean()) == 7


@pytest.fixture
def isic_like(tmp_path, samples_dir) -> Path:
    """A small ISIC-like folder: two labels, PNG and JPEG, one non-square image with drawn hair."""
    root = tmp_path / "isic"
    files = sorted(samples_dir.glob("benign/*.png"))[:2] + sorted(samples_dir.glob("malignant/*.png"))[:2]
    for f in files:
        (root / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / f.parent.name / f.name)
    img = load_rgb(files[0])[:, 64:448]  # 512 x 384
    hairy = _draw_hair(img, 99)
    cv2.imwrite(str(root / "benign" / "ISIC_hairy.JPG"), hairy[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    (root / "benign" / "notes.txt").write_text("not an image")
    return root


def test_preprocess_folder_writes_images_and_manifest(isic_like, tmp_path):
    out = tmp_path / "out"
    summary = preprocess_source(isic_like, out, resolution=64, workers=2)
    assert summary["counts"] == {"benign": 3, "malignant": 2}
    assert summary["images"] == 5 and summary["errors"] == 0
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert len(pngs) == 5 and "benign/ISIC_hairy.png" in pngs
    for p in out.rglob("*.png"):
        assert load_rgb(p).shape == (64, 64, 3)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["labels"] == ["benign", "malignant"]
    hairy = next(f for f in manifest["files"] if f["file"] == "benign/ISIC_hairy.png")
    assert hairy["width_in"] == 384 and hairy["height_in"] == 512
    assert hairy["hair_before"] > hairy["hair_after"]
    assert hairy["hair_mask_fraction"] > 0
    assert manifest["hair_score"].startswith("dermgen.")


def test_preprocess_keep_hair_and_cli(isic_like, tmp_path, capsys):
    from dermgen.cli import main

    out = tmp_path / "kept-hair"
    assert (
        main(["preprocess", str(isic_like), str(out), "--resolution", "48", "--keep-hair", "--workers", "1"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["remove_hair"] is False and summary["resolution"] == 48
    manifest = json.loads((out / MANIFEST).read_text())
    assert all(f["hair_before"] == f["hair_after"] for f in manifest["files"])


def test_preprocess_errors_name_the_input(tmp_path):
    (tmp_path / "empty" / "benign").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no images in label folders"):
        preprocess_source(tmp_path / "empty", tmp_path / "o")
    with pytest.raises(ConfigError, match="not a folder"):
        preprocess_source(tmp_path / "missing", tmp_path / "o")
    with pytest.raises(ConfigError, match="--resolution"):
        preprocess_source(tmp_path / "empty", tmp_path / "o", resolution=4)


def _kept_rows(run: Path) -> list[dict]:
    from dermgen.rundir import RunDir
    from dermgen.store import open_store

    return [r for r in RunDir(open_store(run)).rows(["sample_id", "label", "kept"]).to_pylist() if r["kept"]]


def test_preprocess_run_uses_kept_rows_only(tiny_run, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # mark one row of a copy of the run as dropped: it must not be preprocessed
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shard = sorted((run / "shards").glob("*.parquet"))[0]
    table = pq.read_table(shard)
    kept = table.column("kept").to_pylist()
    kept[0] = False
    i = table.schema.get_field_index("kept")
    pq.write_table(table.set_column(i, table.schema.field(i), pa.chunked_array([kept], pa.bool_())), shard)
    rows = _kept_rows(run)
    summary = preprocess_source(run, tmp_path / "out", resolution=32, workers=1)
    assert summary["images"] == len(rows) == 15
    names = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")}
    assert names == {f"{r['label']}/{r['sample_id']}.png" for r in rows}


def test_preprocess_run_on_s3(tiny_run, s3_bucket, tmp_path):
    import boto3

    client = boto3.client("s3")
    for f in tiny_run.rglob("*"):
        if f.is_file():
            client.upload_file(str(f), s3_bucket, f"runs/tiny/{f.relative_to(tiny_run).as_posix()}")
    summary = preprocess_source(
        f"s3://{s3_bucket}/runs/tiny", f"s3://{s3_bucket}/prep", resolution=32, workers=1
    )
    assert summary["images"] == len(_kept_rows(tiny_run))
    manifest = json.loads(client.get_object(Bucket=s3_bucket, Key="prep/manifest.json")["Body"].read())
    first = manifest["files"][0]["file"]
    img = load_rgb(client.get_object(Bucket=s3_bucket, Key=f"prep/{first}")["Body"].read())
    assert img.shape == (32, 32, 3)
