"""Baking a LoRA into a checkpoint: original LDM single file (what the study published) or a diffusers folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dermgen.pipeline import LoraSpec, Renderer
from dermgen.train.merge import convert_unet, convert_vae, merge_lora

PROMPTS = ["benign mole", "malignant mole"]
RENDER = dict(sampler="Euler", steps=3, cfg_scale=7.0, width=64, height=64)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> str:
    """A random (non-zero) UNet LoRA for the tiny model, alpha != r, saved in diffusers format."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from dermgen.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline()
    cfg = LoraConfig(
        r=2, lora_alpha=6, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out.0"]
    )
    pipe.unet.add_adapter(cfg)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    out = tmp_path_factory.mktemp("adapter")
    StableDiffusionPipeline.save_lora_weights(
        str(out),
        unet_lora_layers=get_peft_model_state_dict(pipe.unet),
        unet_lora_adapter_metadata=cfg.to_dict(),
    )
    return str(out / "pytorch_lora_weights.safetensors")


def _render_base_plus(adapter_path: str, scale: float) -> np.ndarray:
    r = Renderer("tiny", device="cpu", batch_size=2)
    r.set_loras([LoraSpec(adapter_path, scale)])
    return r.render(PROMPTS, ["", ""], [3, 4], **RENDER)


def _render_pipe(pipe) -> np.ndarray:
    r = Renderer("tiny", device="cpu", batch_size=2)
    pipe.set_progress_bar_config(disable=True)
    r.pipe = pipe
    return r.render(PROMPTS, ["", ""], [3, 4], **RENDER)


@pytest.mark.parametrize("layers", [1, 2])
def test_ldm_key_mapping_is_the_inverse_of_diffusers_conversion(layers):
    """Our diffusers -> LDM names, read back by diffusers' own single-file converter, give the same weights."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    # layers=2 with 4 blocks is the SD 1.5 layout (narrow channels to stay small)
    n = 4 if layers == 2 else 2
    unet = UNet2DConditionModel(
        sample_size=8,
        layers_per_block=layers,
        block_out_channels=(32,) * n,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    sd = unet.state_dict()
    back = convert_ldm_unet_checkpoint(convert_unet(sd, dict(unet.config)), dict(unet.config))
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    if layers == 2:
        assert "model.diffusion_model.output_blocks.2.1.conv.weight" in convert_unet(sd, dict(unet.config))
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32,) * 4,
        layers_per_block=layers,
        norm_num_groups=32,
    )
    sd = vae.state_dict()
    back = convert_ldm_vae_checkpoint(convert_vae(sd, dict(vae.config)), dict(vae.config))
    assert set(back) == set(sd)
    assert all(torch.equal(back[k].reshape(sd[k].shape), sd[k]) for k in sd)


def test_merge_to_single_file_renders_like_base_plus_lora(adapter, tmp_path):
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    from dermgen.hashing import sha256_file
    from dermgen.tiny import build_tiny_pipeline

    out = tmp_path / "merged.safetensors"
    record = merge_lora("tiny", [LoraSpec(adapter, 0.7)], out)
    assert record["layout"] == "ldm_single_file" and record["sha256"] == sha256_file(out, cache=False)
    assert record["loras"] == [{"path": adapter, "sha256": sha256_file(adapter, cache=False), "scale": 0.7}]
    assert json.loads(Path(str(out) + ".merge.json").read_text())["sha256"] == record["sha256"]
    with safe_open(str(out), "pt") as f:
        keys = set(f.keys())
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in keys)
    assert any(k.startswith("first_stage_model.encoder.down.") for k in keys)
    assert any(k.startswith("cond_stage_model.transformer.text_model.") for k in keys)
    assert not any("lora" in k for k in keys)
    # read back with diffusers' single-file loader (configs of the tiny model, offline)
    build_tiny_pipeline().save_pretrained(tmp_path / "tiny-config")
    pipe = StableDiffusionPipeline.from_single_file(
        str(out),
        config=str(tmp_path / "tiny-config"),
        local_files_only=True,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    merged = _render_pipe(pipe)
    want = _render_base_plus(adapter, 0.7)
    assert np.abs(merged.astype(int) - want).max() <= 1
    base = Renderer("tiny", device="cpu", batch_size=2).render(PROMPTS, ["", ""], [3, 4], **RENDER)
    assert np.abs(merged.astype(int) - base).mean() > 1.0


def test_merge_cli_to_diffusers_folder(adapter, tmp_path, capsys):
    from dermgen.cli import main

    out = tmp_path / "merged"
    assert (
        main(["merge-lora", "--model", "tiny", "--lora", f"{Path(adapter).parent}:0.5", "--output", str(out)])
        == 0
    )
    record = json.loads(capsys.readouterr().out)
    assert record["layout"] == "diffusers" and (out / "model_index.json").exists()
    assert (out / "merge.json").exists() and record["loras"][0]["scale"] == 0.5
    r = Renderer(str(out), device="cpu", batch_size=2)
    got = r.render(PROMPTS, ["", ""], [3, 4], **RENDER)
    assert np.abs(got.astype(int) - _render_base_plus(adapter, 0.5)).max() <= 1


def test_merge_needs_an_adapter(tmp_path):
    from dermgen.errors import ConfigError

    with pytest.raises(ConfigError, match="--lora"):
        merge_lora("tiny", [], tmp_path / "x.safetensors")
    with pytest.raises(ConfigError, match="does not exist"):
        merge_lora("tiny", [LoraSpec(str(tmp_path / "missing.safetensors"), 1.0)], tmp_path / "x.safetensors")
