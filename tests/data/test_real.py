"""The real-image folder reader: layout, label mapping (case, aliases), splitting."""

from __future__ import annotations

import pytest
from PIL import Image

from dermgen.data.labels import LabelMap
from dermgen.data.real import FolderDataset, scan_folder, split_folder
from dermgen.data.transforms import eval_transform
from dermgen.errors import ConfigError


def _link_some(samples_dir, dest, mapping: dict[str, str], n: int = 3) -> None:
    """dest/<folder>/ with n symlinked PNGs from samples_dir/<label>/ for each folder -> label."""
    for folder, label in mapping.items():
        d = dest / folder
        d.mkdir(parents=True)
        for src in sorted((samples_dir / label).glob("*.png"))[:n]:
            (d / src.name).symlink_to(src)


def test_shared_samples_load_with_labels(samples_dir):
    ds = FolderDataset(samples_dir, output="dict")
    assert len(ds) == 120
    assert ds.labels.count(0) == 60 and ds.labels.count(1) == 60
    item = ds[0]
    assert isinstance(item["image"], Image.Image) and item["image"].size == (512, 512)
    assert item["label"] == 0 and item["label_name"] == "benign"
    assert item["sample_id"].startswith("benign/")
    x, y = FolderDataset(samples_dir, transform=eval_transform(32))[119]
    assert x.shape == (3, 32, 32) and y == 1


def test_folder_names_are_case_insensitive_and_aliases_opt_in(samples_dir, tmp_path):
    _link_some(samples_dir, tmp_path, {"Benign": "benign", "MELANOMA": "malignant", "nv": "benign"})
    with pytest.raises(ConfigError, match="'MELANOMA' maps to no class"):
        scan_folder(tmp_path)
    records = scan_folder(tmp_path, LabelMap.with_aliases())
    assert {r["folder"]: r["label"] for r in records} == {
        "Benign": "benign",
        "MELANOMA": "malignant",
        "nv": "benign",
    }
    assert sorted({(r["label"], r["label_id"]) for r in records}) == [("benign", 0), ("malignant", 1)]
    skipped = scan_folder(tmp_path, unknown="skip")
    assert {r["folder"] for r in skipped} == {"Benign"}


def test_non_images_and_hidden_files_are_ignored(samples_dir, tmp_path):
    _link_some(samples_dir, tmp_path, {"benign": "benign", "malignant": "malignant"}, n=2)
    (tmp_path / "benign" / "notes.txt").write_text("x")
    (tmp_path / "benign" / ".hidden.png").write_bytes(b"")
    Image.new("RGB", (10, 10)).save(tmp_path / "malignant" / "extra.JPG")
    records = scan_folder(tmp_path)
    assert len(records) == 5
    assert FolderDataset(tmp_path)[4][0].size == (10, 10)


def test_empty_or_missing_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "benign").mkdir()
    with pytest.raises(ConfigError, match="holds no"):
        scan_folder(tmp_path)


def test_split_folder_is_stratified_disjoint_and_deterministic(samples_dir, tmp_path):
    counts = split_folder(samples_dir, tmp_path / "a", {"train": 0.5, "test": 0.3, "val": 0.2}, seed=1)
    assert counts == {
        "train": {"benign": 30, "malignant": 30},
        "test": {"benign": 18, "malignant": 18},
        "val": {"benign": 12, "malignant": 12},
    }
    names = {s: {r["sample_id"] for r in scan_folder(tmp_path / "a" / s)} for s in counts}
    assert not names["train"] & names["test"] and not names["train"] & names["val"]
    split_folder(samples_dir, tmp_path / "b", {"train": 0.5, "test": 0.3, "val": 0.2}, seed=1)
    assert names["test"] == {r["sample_id"] for r in scan_folder(tmp_path / "b" / "test")}
    split_folder(samples_dir, tmp_path / "c", {"train": 0.5, "test": 0.3, "val": 0.2}, seed=2)
    assert names["test"] != {r["sample_id"] for r in scan_folder(tmp_path / "c" / "test")}
