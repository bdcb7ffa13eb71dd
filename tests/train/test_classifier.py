"""Classifier validation internals: metrics, splits, models, data composition, determinism, Ray Train."""

from __future__ import annotations

import json

import pytest
import torch

from dermgen.errors import ConfigError
from dermgen.train.classifier import (
    auroc,
    binary_metrics,
    build_model,
    make_classifier_config,
    prepare_data,
    render_table,
    run_validation,
    stratified_split,
)


def test_auroc_and_binary_metrics():
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert auroc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert auroc([1, 1], [0.2, 0.3]) is None
    m = binary_metrics([0, 0, 0, 1, 1], [0.1, 0.7, 0.2, 0.9, 0.4])
    assert m["confusion_matrix"] == [[2, 1], [1, 1]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["sensitivity"] == pytest.approx(0.5) and m["specificity"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_stratified_split_is_disjoint_per_class_and_seeded():
    labels = [0] * 20 + [1] * 10
    train, held = stratified_split(labels, 0.2, seed=1)
    assert sorted(train + held) == list(range(30)) and not set(train) & set(held)
    assert sum(labels[i] == 0 for i in held) == 4 and sum(labels[i] == 1 for i in held) == 2
    assert stratified_split(labels, 0.2, seed=1) == (train, held)
    assert stratified_split(labels, 0.2, seed=2) != (train, held)


@pytest.mark.parametrize("name", ["mobilenet_v2", "vit_b_16"])
def test_tiny_models_forward(name):
    model, mean, std = build_model(name, "none", size="tiny", image_size=64)
    out = model(pixel_values=torch.randn(2, 3, 64, 64)).logits
    assert out.shape == (2, 2) and mean == std == (0.5, 0.5, 0.5)


def test_full_models_are_the_study_architectures():
    with torch.device("meta"):
        vit, _, _ = build_model("vit_b_16", "none")
        mnet, _, _ = build_model("mobilenet_v2", "none")
    c = vit.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.patch_size, c.image_size) == (
        768,
        12,
        12,
        16,
        224,
    )
    assert 85e6 < sum(p.numel() for p in vit.parameters()) < 87e6  # ViT-B/16 with a 2-class head
    assert mnet.config.depth_multiplier == 1.0
    assert 2.2e6 < sum(p.numel() for p in mnet.parameters()) < 2.3e6  # MobileNet-V2 1.0


def test_weights_from_a_local_folder(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    folder = tmp_path / "vit"
    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=5,
    )
    source = ViTForImageClassification(cfg)
    source.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.4, 0.4, 0.4], "image_std": [0.2, 0.2, 0.2]})
    )
    model, mean, std = build_model("vit_b_16", str(folder), image_size=32)
    assert model.config.num_labels == 2 and mean == (0.4, 0.4, 0.4) and std == (0.2, 0.2, 0.2)
    assert torch.equal(
        model.vit.embeddings.patch_embeddings.projection.weight,
        source.vit.embeddings.patch_embeddings.projection.weight,
    )
    # a different input size goes through with interpolated position embeddings
    from dermgen.train.classifier import _logits

    assert _logits(model, torch.randn(1, 3, 48, 48)).shape == (1, 2)
    with pytest.raises(ConfigError, match="not a local model folder"):
        build_model("vit_b_16", str(tmp_path / "missing" / "vit" / "x"))


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="hybrid mode needs --synthetic"):
        make_classifier_config(real="r", test=["t"], model="vit_b_16", output=str(tmp_path))
    with pytest.raises(ConfigError, match="--image-size: .*multiple of 8"):
        make_classifier_config(
            real="r", test=["t"], model="vit_b_16", output="o", modes=["baseline"], image_size=60
        )
    with pytest.raises(ConfigError, match="--model"):
        make_classifier_config(real="r", test=["t"], model="resnet", output="o", modes=["baseline"])


def _cfg(sample_splits, tmp_path, **over):
    base = dict(
        real=str(sample_splits["real"]),
        synthetic=str(sample_splits["syn"]),
        test=[str(sample_splits["test"])],
        model="mobilenet_v2",
        weights="none",
        model_size="tiny",
        image_size=32,
        epochs=2,
        batch_size=16,
        output=str(tmp_path / "out"),
        cpu_threads=1,
    )
    base.update(over)
    return make_classifier_config(**base)


def test_hybrid_composition_follows_the_ratio(sample_splits, tmp_path):
    data = prepare_data(_cfg(sample_splits, tmp_path, synthetic_ratio=0.25, val_fraction=0.2))
    comp = data["composition"]
    assert comp["baseline"] == {"real": 40, "synthetic": 0, "synthetic_fraction": 0.0}
    assert comp["hybrid"]["real"] == 40 and comp["hybrid"]["synthetic"] == 13  # 40 * 0.25 / 0.75
    assert len(data["train"]["hybrid"]) == 53 and len(data["val"]) == 10
    full = prepare_data(_cfg(sample_splits, tmp_path, val_fraction=0.2))["composition"]["hybrid"]
    assert full["synthetic_wanted"] == 120 and full["synthetic"] == 30  # capped by the run's 30 images
    assert set(data["tests"]) == {"test"}


def test_run_validation_is_deterministic_and_writes_reports(sample_splits, tmp_path):
    a = run_validation(_cfg(sample_splits, tmp_path / "a", output=str(tmp_path / "a")))
    b = run_validation(_cfg(sample_splits, tmp_path / "b", output=str(tmp_path / "b")))
    for mode in ("baseline", "hybrid"):
        assert a[mode]["test"] == b[mode]["test"]
        assert [h["train_loss"] for h in a["training"][mode]["history"]] == [
            h["train_loss"] for h in b["training"][mode]["history"]
        ]
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert set(saved["baseline"]["test"]) >= {
        "accuracy",
        "balanced_accuracy",
        "auroc",
        "sensitivity",
        "specificity",
        "confusion_matrix",
    }
    table = (tmp_path / "a" / "table.md").read_text()
    assert "| MobileNet-V2 (tiny), baseline |" in table and "| MobileNet-V2 (tiny), hybrid |" in table
    assert (tmp_path / "a" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert render_table(saved) == table


@pytest.mark.slow
def test_ray_train_two_cpu_workers(ray_local, sample_splits, tmp_path):
    cfg = _cfg(sample_splits, tmp_path, num_workers=2, modes=["baseline"], epochs=1, image_size=32)
    metrics = run_validation(cfg)
    assert metrics["training"]["baseline"]["ray_workers"] == 2
    assert len(metrics["training"]["baseline"]["history"]) == 1
    assert 0.0 <= metrics["baseline"]["test"]["accuracy"] <= 1.0 and metrics["baseline"]["test"]["n"] == 40
