"""Test helper: write diffusers SD 1.x components as an original (CompVis LDM) single-file checkpoint.

The weights go through `dermgen.train.merge.to_ldm_state_dict` (the reverse of diffusers' single-file
conversion, for any number of UNet levels and res blocks), so the tiny model is written in the same layout
as Derm-T2IM.safetensors and diffusers' own loader checks that converter. Also writes the
matching LDM yaml (the shape of v1-inference.yaml with the model's sizes) and, for the parts an LDM yaml
does not describe (text encoder sizes, tokenizer, scheduler), a diffusers config folder without weights.
"""

from __future__ import annotations

import json
from pathlib import Path


def ldm_state_dict(components: dict) -> dict:
    """The whole pipeline in the LDM layout (dermgen's own converter, the one `merge` writes files with),
    plus what real SD 1.x files also carry: the text encoder's position ids and the DDPM schedule buffers."""
    from types import SimpleNamespace

    import torch

    from dermgen.train.merge import CLIP_PREFIX, to_ldm_state_dict

    sd = to_ldm_state_dict(SimpleNamespace(**components))
    n = components["text_encoder"].config.max_position_embeddings
    sd[CLIP_PREFIX + "text_model.embeddings.position_ids"] = torch.arange(n, dtype=torch.int64)[None]
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
