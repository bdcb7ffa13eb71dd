"""DreamBooth + LoRA fine-tuning on the CPU with the tiny model at 64 px (the study's recipe, scaled down)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dermgen.errors import ConfigError
from dermgen.train.lora import (
    WEIGHTS_NAME,
    Layout,
    Trainer,
    epoch_order,
    make_train_config,
    train_lora,
)

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    """`dermgen train-lora ARGV` (the command's exit code)."""
    from dermgen.cli import main as dermgen_main

    return dermgen_main(["train-lora", *argv])


PROMPTS = ["benign mole", "malignant mole"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine, oversubscribed threads make tiny models many times slower."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _config(data, output, **kw):
    base = dict(
        model="tiny",
        data=str(data),
        output=str(output),
        resolution=64,
        learning_rate=1e-3,
        lr_warmup_steps=10,
        sample_steps=0,
        tensorboard=False,
        log_every=1000,
    )
    base.update(kw)
    return make_train_config(**base)


def _losses(output) -> list[dict]:
    with open(Path(output) / "logs" / "loss.csv", newline="") as f:
        return list(csv.DictReader(f))


def _tensors(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def trained(samples_dir, tmp_path_factory, one_thread):
    """200 steps on the 120 shared samples, rank 4 with alpha 8 (alpha != r: the metadata matters)."""
    out = tmp_path_factory.mktemp("lora") / "adapter"
    cfg = _config(
        samples_dir,
        out,
        max_steps=200,
        rank=4,
        lora_alpha=8,
        sample_steps=100,
        sample_inference_steps=2,
        checkpointing_steps=100,
    )
    trainer = Trainer(cfg)
    result = trainer.run()
    return trainer, result


def test_training_lowers_the_loss(trained):
    _, result = trained
    losses = [float(r["loss"]) for r in _losses(result.output)]
    assert len(losses) == 200 and result.steps == 200 and not result.interrupted
    k = len(losses) // 5
    first, last = np.mean(losses[:k]), np.mean(losses[-k:])
    assert last < 0.85 * first, (first, last)


def test_outputs_and_card(trained, samples_dir):
    from dermgen.hashing import sha256_file
    from dermgen.preprocess import list_sources
    from dermgen.train.lora_card import data_fingerprint, read_card

    trainer, result = trained
    out = Path(result.output)
    assert result.weights == str(out / WEIGHTS_NAME)
    card = read_card(out)
    assert card["adapter"]["sha256"] == sha256_file(out / WEIGHTS_NAME, cache=False)
    assert card["base_model"]["sha256"] == trainer.identity.sha256
    assert card["base_model"]["short_hash"] == trainer.identity.sha256[:10]
    fp = data_fingerprint(list_sources(samples_dir), str(samples_dir))
    assert card["data"]["sha256"] == fp["sha256"]
    assert card["data"]["counts"] == {"benign": 60, "malignant": 60}
    hp = card["hyperparameters"]
    assert (hp["rank"], hp["lora_alpha"], hp["batch_size"], hp["resolution"]) == (4, 8.0, 2, 64)
    assert hp["lr_scheduler"] == "constant_with_warmup"
    assert hp["target_modules"] == ["to_q", "to_k", "to_v", "to_out.0"]
    assert hp["instance_prompts"] == {"benign": "benign mole", "malignant": "malignant mole"}
    assert hp["noise_scheduler"]["class"] == "DDPMScheduler"
    assert hp["optimizer_used"] == "torch AdamW" and hp["mixed_precision_used"] == "no"
    losses = _losses(out)
    assert card["training"]["final_loss"] == pytest.approx(float(losses[-1]["loss"]), rel=1e-6)
    assert card["training"]["steps"] == 200
    assert card["dermgen_version"] and card["environment"]["libraries"]["peft"]
    # learning samples: 2 prompts (rows) x 2 seeds (columns) at steps 0, 100, 200
    from PIL import Image

    grids = sorted(p.name for p in (out / "samples").glob("*.png"))
    assert grids == ["step-00000.png", "step-00100.png", "step-00200.png"]
    assert Image.open(out / "samples" / "step-00200.png").size == (128, 128)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000100", "step-0000200"]


def test_saved_adapter_reloads_as_the_trained_unet(trained):
    """save_lora_weights + load_lora_weights reproduce the trained UNet (alpha/r scale included)."""
    import torch

    from dermgen.tiny import build_tiny_pipeline

    trainer, result = trained
    pipe = build_tiny_pipeline()
    pipe.load_lora_weights(result.weights, adapter_name="a")
    g = torch.Generator().manual_seed(0)
    x, emb = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g)
    t = torch.tensor([10, 700])
    trainer.unet.eval()
    with torch.no_grad():
        want = trainer.unet(x, t, emb).sample
        got = pipe.unet(x, t, emb).sample
        pipe.set_adapters(["a"], adapter_weights=[0.0])
        base = pipe.unet(x, t, emb).sample
    assert torch.allclose(got, want, atol=1e-5)
    assert (want - base).abs().mean() > 1e-3  # the adapter really changed the UNet


def test_adapter_changes_generation_and_scale_zero_is_the_base_model(trained):
    from dermgen.pipeline import LoraSpec, Renderer

    _, result = trained
    r = Renderer("tiny", device="cpu", batch_size=2)
    kw = dict(sampler="Euler", steps=4, cfg_scale=7.0, width=64, height=64)
    base = r.render(PROMPTS, ["", ""], [1, 2], **kw)
    info = r.set_loras([LoraSpec(result.weights, 1.0)])
    tuned = r.render(PROMPTS, ["", ""], [1, 2], **kw)
    r.set_loras([LoraSpec(result.weights, 0.0)])
    zero = r.render(PROMPTS, ["", ""], [1, 2], **kw)
    r.set_loras([])
    again = r.render(PROMPTS, ["", ""], [1, 2], **kw)
    assert (
        info[0]["sha256"]
        == json.loads((Path(result.output) / "lora_card.json").read_text())["adapter"]["sha256"]
    )
    assert np.abs(tuned.astype(int) - base).mean() > 2.0
    assert np.array_equal(zero, base)
    assert np.array_equal(again, base)


def test_generate_with_lora_records_the_adapter_in_every_row(trained, tmp_path):
    import importlib.util

    # tests/conftest.py by path: tests/train/conftest.py shadows the module name "conftest"
    spec = importlib.util.spec_from_file_location("dermgen_root_conftest", REPO / "tests" / "conftest.py")
    root_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root_conftest)
    generate_run = root_conftest.generate_run
    from dermgen.rundir import RunDir
    from dermgen.store import open_store

    _, result = trained
    sha = json.loads((Path(result.output) / "lora_card.json").read_text())["adapter"]["sha256"]
    generate_run(tmp_path / "run", limit=4, lora=[f"{result.weights}:0.8"])
    rows = RunDir(open_store(tmp_path / "run")).rows(["status", "loras"]).to_pylist()
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert [(lr["sha256"], lr["scale"]) for lr in r["loras"]] == [(sha, pytest.approx(0.8))]


def test_resume_ends_at_the_same_weights(samples_dir, tmp_path):
    """Interrupted at step 10 (--stop-after) and resumed == uninterrupted: flips, dropout, accumulation, samples."""
    kw = dict(
        max_steps=24,
        gradient_accumulation_steps=2,
        random_flip=True,
        lora_dropout=0.1,
        sample_steps=10,
        sample_inference_steps=2,
        checkpointing_steps=7,
    )
    full = train_lora(_config(samples_dir, tmp_path / "full", **kw))
    part = train_lora(_config(samples_dir, tmp_path / "part", stop_after=10, **kw))
    assert part.interrupted and part.steps == 10 and part.weights is None
    assert not (tmp_path / "part" / WEIGHTS_NAME).exists()
    resumed = train_lora(_config(samples_dir, tmp_path / "part", resume=True, **kw))
    assert not resumed.interrupted and resumed.steps == 24
    a, b = _tensors(full.weights), _tensors(resumed.weights)
    assert set(a) == set(b) and len(a) > 0
    for k in a:
        assert np.array_equal(a[k].numpy(), b[k].numpy()), k
    assert [r["loss"] for r in _losses(full.output)] == [r["loss"] for r in _losses(resumed.output)]
    assert [int(r["step"]) for r in _losses(resumed.output)] == list(range(1, 25))
    # the last checkpoint holds the same optimizer state too
    import torch

    sa = torch.load(tmp_path / "full/checkpoints/step-0000024/training_state.pt", weights_only=True)
    sb = torch.load(tmp_path / "part/checkpoints/step-0000024/training_state.pt", weights_only=True)
    for k, v in sa["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], sb["optimizer"]["state"][k]["exp_avg"])
    assert sa["lr_scheduler"] == sb["lr_scheduler"]


def test_resume_refuses_other_settings_and_fresh_runs_refuse_old_outputs(samples_dir, tmp_path):
    train_lora(_config(samples_dir, tmp_path / "o", max_steps=4, stop_after=1))
    with pytest.raises(ConfigError, match="--rank: checkpoint has 4, got 8"):
        train_lora(_config(samples_dir, tmp_path / "o", max_steps=4, rank=8, resume=True))
    with pytest.raises(ConfigError, match="pass --resume"):
        train_lora(_config(samples_dir, tmp_path / "o", max_steps=4))
    # --resume with no checkpoint starts a new run
    res = train_lora(_config(samples_dir, tmp_path / "new", max_steps=1, resume=True))
    assert res.steps == 1 and Path(res.weights).exists()


def test_prior_preservation_from_a_run(tiny_run, samples_dir, tmp_path):
    """Train on the kept rows of a generated run, with the shared samples as class images."""
    from dermgen.rundir import RunDir
    from dermgen.store import open_store

    res = train_lora(
        _config(tiny_run, tmp_path / "o", max_steps=3, class_data=str(samples_dir), prior_loss_weight=0.5)
    )
    rows = [r for r in _losses(res.output)]
    assert all(float(r["prior_loss"]) > 0 for r in rows)
    for r in rows:
        assert float(r["loss"]) == pytest.approx(
            float(r["instance_loss"]) + 0.5 * float(r["prior_loss"]), rel=1e-5
        )
    card = json.loads((Path(res.output) / "lora_card.json").read_text())
    kept = [r for r in RunDir(open_store(tiny_run)).rows(["label", "kept"]).to_pylist() if r["kept"]]
    assert card["data"]["images"] == len(kept)
    assert card["class_data"]["counts"] == {"benign": 60, "malignant": 60}
    assert card["hyperparameters"]["class_prompt"] == "skin mole"


def test_text_encoder_lora_and_gradient_checkpointing(samples_dir, tmp_path):
    import torch

    from dermgen.pipeline import LoraSpec, Renderer

    plain = train_lora(_config(samples_dir, tmp_path / "a", max_steps=3, train_text_encoder=True))
    ckpt = train_lora(
        _config(
            samples_dir, tmp_path / "b", max_steps=3, train_text_encoder=True, gradient_checkpointing=True
        )
    )
    a, b = _tensors(plain.weights), _tensors(ckpt.weights)
    assert any(k.startswith("text_encoder.") for k in a) and any(k.startswith("unet.") for k in a)
    for k in a:  # checkpointing recomputes activations; it must not change the result
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    r = Renderer("tiny", device="cpu", batch_size=2)
    kw = dict(sampler="Euler", steps=3, cfg_scale=7.0, width=64, height=64)
    base = r.render(PROMPTS, ["", ""], [5, 6], **kw)
    r.set_loras([LoraSpec(plain.weights, 0.0)])
    assert np.array_equal(r.render(PROMPTS, ["", ""], [5, 6], **kw), base)
    r.set_loras([LoraSpec(plain.weights, 1.0)])
    assert not np.array_equal(r.render(PROMPTS, ["", ""], [5, 6], **kw), base)


def test_cli_contract(samples_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = [
        "--model",
        "tiny",
        "--data",
        str(samples_dir),
        "--output",
        str(out),
        "--resolution",
        "64",
        "--max-steps",
        "3",
        "--rank",
        "2",
        "--sample-steps",
        "0",
        "--json",
    ]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 3 and result["weights"] == str(out / WEIGHTS_NAME)
    card = json.loads((out / "lora_card.json").read_text())
    assert (card["hyperparameters"]["rank"], card["hyperparameters"]["max_steps"]) == (2, 3)
    assert card["hyperparameters"]["resolution"] == 64
    assert main(argv[:-1] + ["--resume"]) == 0  # already complete: re-exports, trains nothing
    assert len(_losses(out)) == 3


def test_cli_rejects_bad_input(samples_dir, tmp_path, capsys):
    assert (
        main(["--model", "tiny", "--data", str(samples_dir), "--output", str(tmp_path), "--resolution", "30"])
        == 2
    )
    assert "--resolution: must be a multiple of 8" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data", "x", "--output", "y", "--max-steps", "3", "--epochs", "2"])
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "jobs" / "train_lora.py"),
            "--model",
            "tiny",
            "--data",
            str(tmp_path / "nope"),
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--data:" in proc.stderr and "is not a folder" in proc.stderr


def test_config_validation_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match="--instance-prompt: must be a prompt template"):
        make_train_config(data="d", output="o", instance_prompt="{kind} mole")
    with pytest.raises(ConfigError, match="--sample-sampler"):
        make_train_config(data="d", output="o", sample_sampler="Heun 9000")
    with pytest.raises(ConfigError, match="--rank"):
        make_train_config(data="d", output="o", rank=0)


def test_data_parallel_partition_matches_one_big_batch():
    one = Layout(n_images=10, batch_size=4, world=1, accumulation=1)
    two = Layout(n_images=10, batch_size=2, world=2, accumulation=1)
    assert one.micro_per_epoch == two.micro_per_epoch == 2
    for micro in range(6):
        assert two.indices(7, micro, 0) + two.indices(7, micro, 1) == one.indices(7, micro, 0)
    epoch0 = one.indices(7, 0, 0) + one.indices(7, 1, 0)
    assert len(set(epoch0)) == 8  # no image twice within an epoch
    assert not np.array_equal(epoch_order(7, 0, 10), epoch_order(7, 1, 10))
    assert np.array_equal(epoch_order(7, 3, 10), epoch_order(7, 3, 10))


@pytest.mark.slow
def test_ray_train_two_workers_match_one_process(ray_local, samples_dir, tmp_path):
    """Two Ray Train CPU workers (gloo) with batch 1 each == one process with batch 2."""
    kw = dict(max_steps=4, lr_warmup_steps=1)
    two = train_lora(_config(samples_dir, tmp_path / "two", batch_size=1, num_workers=2, **kw))
    one = train_lora(_config(samples_dir, tmp_path / "one", batch_size=2, **kw))
    a, b = _tensors(one.weights), _tensors(two.weights)
    for k in a:
        assert np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-5), k
    card = json.loads((tmp_path / "two" / "lora_card.json").read_text())
    assert card["hyperparameters"]["world_size"] == 2 and card["hyperparameters"]["global_batch_size"] == 2
