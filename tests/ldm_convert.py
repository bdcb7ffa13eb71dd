"""Test helper: write diffusers SD 1.x components as an original (CompVis LDM) single-file checkpoint.

The reverse of diffusers' single-file conversion (the logic of diffusers'
`scripts/convert_diffusers_to_original_stable_diffusion.py`), generalised to any number of UNet levels and
res blocks so the tiny model can be written in the same layout as Derm-T2IM.safetensors. Also writes the
matching LDM yaml (the shape of v1-inference.yaml with the model's sizes) and, for the parts an LDM yaml
does not describe (text encoder sizes, tokenizer, scheduler), a diffusers config folder without weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."

_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTN = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}


def _unet_prefix_map(config: Any) -> list[tuple[str, str, bool]]:
    """(diffusers prefix, LDM prefix, is_resnet) for every block of a diffusers UNet2DConditionModel config."""
    n = len(config.block_out_channels)
    per = config.layers_per_block + 1  # LDM input/output block slots per level
    out: list[tuple[str, str, bool]] = []
    for i in range(n):
        for j in range(config.layers_per_block):
            slot = per * i + j + 1
            out.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{slot}.0.", True))
            out.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{slot}.1.", False))
        if i < n - 1:
            out.append(
                (f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{per * (i + 1)}.0.op.", False)
            )
        up_has_attn = config.up_block_types[i].startswith("CrossAttn")
        for j in range(per):
            out.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{per * i + j}.0.", True))
            out.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{per * i + j}.1.", False))
        if i < n - 1:
            out.append(
                (
                    f"up_blocks.{i}.upsamplers.0.",
                    f"output_blocks.{per * i + per - 1}.{2 if up_has_attn else 1}.",
                    False,
                )
            )
    out.append(("mid_block.resnets.0.", "middle_block.0.", True))
    out.append(("mid_block.attentions.0.", "middle_block.1.", False))
    out.append(("mid_block.resnets.1.", "middle_block.2.", True))
    return out


def unet_to_ldm(unet) -> dict:
    state = unet.state_dict()
    blocks = _unet_prefix_map(unet.config)
    out = {}
    for key, value in state.items():
        new = None
        for hf, sd in _UNET_TOP.items():
            if key.startswith(hf):
                new = sd + key[len(hf) :]
        for hf, sd, is_resnet in blocks:
            if key.startswith(hf):
                rest = key[len(hf) :]
                if is_resnet:
                    for a, b in _UNET_RESNET.items():
                        rest = rest.replace(a, b)
                new = sd + rest
        if new is None:
            raise KeyError(f"no LDM name for UNet weight {key!r}")
        out[UNET_PREFIX + new] = value
    return out


def vae_to_ldm(vae) -> dict:
    n = len(vae.config.block_out_channels)
    out = {}
    for key, value in vae.state_dict().items():
        new = key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        for i in range(n):
            new = new.replace(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")
            new = new.replace(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
            new = new.replace(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block.")
            new = new.replace(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample.")
        for i in range(2):
            new = new.replace(f"mid_block.resnets.{i}.", f"mid.block_{i + 1}.")
        if "mid_block.attentions.0." in new:
            new = new.replace("mid_block.attentions.0.", "mid.attn_1.")
            for a, b in _VAE_ATTN.items():
                new = new.replace(a, b)
            if new.endswith("weight") and value.ndim == 2:  # LDM attention uses 1x1 convs
                value = value[:, :, None, None]
        out[VAE_PREFIX + new] = value
    return out


def clip_to_ldm(text_encoder) -> dict:
    state = text_encoder.state_dict()
    out = {}
    for key, value in state.items():
        key = key.removeprefix("text_model.")  # CLIPTextModel is flattened in recent transformers
        out[CLIP_PREFIX + key] = value
    if CLIP_PREFIX + "embeddings.position_ids" not in out:  # real SD 1.x files carry this buffer
        import torch

        n = text_encoder.config.max_position_embeddings
        out[CLIP_PREFIX + "embeddings.position_ids"] = torch.arange(n, dtype=torch.int64)[None]
    return out


def ldm_state_dict(components: dict) -> dict:
    """The whole pipeline in the LDM layout, with the DDPM schedule buffers real SD 1.x files carry."""
    import torch

    sd = {
        **unet_to_ldm(components["unet"]),
        **vae_to_ldm(components["vae"]),
        **clip_to_ldm(components["text_encoder"]),
    }
    sched = components["scheduler"]
    sd["betas"] = sched.betas.float()
    sd["alphas_cumprod"] = sched.alphas_cumprod.float()
    return {
        k: v.detach().to(torch.float32 if v.is_floating_point() else v.dtype).contiguous()
        for k, v in sd.items()
    }


def ldm_yaml(components: dict) -> dict:
    """An original LDM config (v1-inference.yaml's shape) describing these UNet and VAE sizes."""
    u, v = components["unet"].config, components["vae"].config
    base = u.block_out_channels[0]
    attn_res = [2**i for i, t in enumerate(u.down_block_types) if t.startswith("CrossAttn")]
    return {
        "model": {
            "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
            "params": {
                "linear_start": 0.00085,
                "linear_end": 0.012,
                "timesteps": 1000,
                "image_size": 8,
                "channels": 4,
                "conditioning_key": "crossattn",
                "scale_factor": v.scaling_factor,
                "use_ema": False,
                "unet_config": {
                    "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                    "params": {
                        "image_size": 32,
                        "in_channels": u.in_channels,
                        "out_channels": u.out_channels,
                        "model_channels": base,
                        "attention_resolutions": attn_res,
                        "num_res_blocks": u.layers_per_block,
                        "channel_mult": [c // base for c in u.block_out_channels],
                        "num_heads": u.attention_head_dim,
                        "use_spatial_transformer": True,
                        "transformer_depth": 1,
                        "context_dim": u.cross_attention_dim,
                        "legacy": False,
                    },
                },
                "first_stage_config": {
                    "target": "ldm.models.autoencoder.AutoencoderKL",
                    "params": {
                        "embed_dim": v.latent_channels,
                        "ddconfig": {
                            "double_z": True,
                            "z_channels": v.latent_channels,
                            "resolution": v.sample_size,
                            "in_channels": v.in_channels,
                            "out_ch": v.out_channels,
                            "ch": v.block_out_channels[0],
                            "ch_mult": [c // v.block_out_channels[0] for c in v.block_out_channels],
                            "num_res_blocks": v.layers_per_block,
                            "attn_resolutions": [],
                            "dropout": 0.0,
                        },
                    },
                },
                "cond_stage_config": {"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder"},
            },
        }
    }


def write_config_dir(components: dict, folder: Path) -> Path:
    """A diffusers pipeline folder with configs, tokenizer and scheduler but no weights."""
    folder.mkdir(parents=True, exist_ok=True)
    index = {
        "_class_name": "StableDiffusionPipeline",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", type(components["scheduler"]).__name__],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    components["scheduler"].save_pretrained(folder / "scheduler")
    components["tokenizer"].save_pretrained(folder / "tokenizer")
    components["text_encoder"].config.save_pretrained(folder / "text_encoder")
    components["unet"].save_config(folder / "unet")
    components["vae"].save_config(folder / "vae")
    return folder


def write_ldm_checkpoint(components: dict, path: Path, *, config_dir: Path | None = None) -> Path:
    """Write `path` (.safetensors, LDM layout), `path.with_suffix('.yaml')` and optionally a config folder."""
    import yaml
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm_state_dict(components), str(path))
    path.with_suffix(".yaml").write_text(yaml.safe_dump(ldm_yaml(components), sort_keys=False))
    if config_dir is not None:
        write_config_dir(components, config_dir)
    return path
