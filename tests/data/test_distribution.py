"""Fréchet distance / KID: the maths, the honest fallback, a local transformers extractor, the skip."""

from __future__ import annotations

import numpy as np
import pytest

from dermgen.data.distribution import (
    ColorHistogramFeatures,
    TransformersFeatures,
    distribution_report,
    frechet_distance,
    kernel_inception_distance,
)
from dermgen.data.real import FolderDataset, split_folder
from dermgen.errors import ConfigError


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (4000, 3))
    b = rng.normal(0, 1, (4000, 3)) + np.array([2.0, 0.0, 0.0])
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=0.05)  # |mu diff|^2, equal covariances
    c = rng.normal(0, 2, (4000, 3))
    assert frechet_distance(a, c) == pytest.approx(3.0, rel=0.1)  # 3 * (1 + 4 - 2*2)


def test_kid_near_zero_for_one_distribution_and_positive_otherwise():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, (300, 8)), rng.normal(0, 1, (300, 8))
    kid, _ = kernel_inception_distance(a, b, subsets=20, subset_size=100)
    far, _ = kernel_inception_distance(a, b + 1.5, subsets=20, subset_size=100)
    assert abs(kid) < 0.02 and far > 10 * max(abs(kid), 1e-3)


def test_histogram_fallback_is_labelled_and_separates_classes(samples_dir, tmp_path):
    split_folder(samples_dir, tmp_path, {"a": 0.5, "b": 0.5}, seed=0)
    a_benign = FolderDataset(tmp_path / "a").subset(range(30))  # the 30 benign images of split a
    rep_same = distribution_report(
        a_benign, tmp_path / "b", features="color-histogram", max_images=60, kid_subsets=5
    )
    assert rep_same["features"] == "color-histogram" and rep_same["is_fid"] is False
    assert "not Inception" in rep_same["features_description"] and "fid" not in rep_same
    feats = ColorHistogramFeatures()
    benign = feats([FolderDataset(samples_dir)[i][0] for i in range(0, 20)])
    benign2 = feats([FolderDataset(samples_dir)[i][0] for i in range(20, 40)])
    malignant = feats([FolderDataset(samples_dir)[i][0] for i in range(60, 80)])
    assert frechet_distance(benign, benign2) < frechet_distance(benign, malignant)


def test_local_transformers_model_as_extractor(tmp_path, samples_dir):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = tmp_path / "vit"
    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    ViTModel(cfg).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    ext = TransformersFeatures(folder, device="cpu")
    imgs = [FolderDataset(samples_dir)[i][0] for i in (0, 1, 2, 61)]
    f = ext(imgs)
    assert f.shape == (4, 32) and np.allclose(f, ext(imgs))
    assert "not Inception" in ext.description


def test_skipped_without_features_and_bad_path_errors(tiny_run, samples_dir, tmp_path):
    rep = distribution_report(tiny_run, samples_dir)
    assert rep["skipped"] is True and "no local feature extractor" in rep["reason"]
    with pytest.raises(ConfigError, match="nothing is downloaded"):
        distribution_report(tiny_run, samples_dir, features=str(tmp_path / "inception"))


def test_cli_prints_json_last(tiny_run, samples_dir, capsys):
    import json

    from dermgen.data.distribution import main

    assert main([str(tiny_run), str(samples_dir), "--features", "color-histogram", "--max-images", "8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_run"] == 8 and report["n_reference"] == 8 and report["frechet_distance"] > 0
