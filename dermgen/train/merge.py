"""Bake LoRA adapters into a base model: W = W0 + beta * dW, written as one checkpoint.

The study published its model this way (a DreamBooth LoRA merged into Stable Diffusion 1.5, one
single-file checkpoint in the original LDM layout). :func:`merge_lora` loads the base model, fuses the
adapters at their scales and writes either

* ``*.safetensors``: a single file in the original LDM layout (``model.diffusion_model.*``,
  ``first_stage_model.*``, ``cond_stage_model.transformer.text_model.*``), loadable by the web UIs and by
  ``dermgen generate --model merged.safetensors``; the key mapping is the inverse of diffusers' own
  single-file conversion, generalised to any number of blocks / layers per block; or
* a folder: a diffusers pipeline folder (``save_pretrained``), loadable with ``--model FOLDER``.

A ``<output>.merge.json`` (or ``merge.json`` in the folder) records the base model, every adapter with its
sha256 and scale, and the output's sha256.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dermgen.errors import ConfigError
from dermgen.pipeline import LoraSpec
from dermgen.uri import is_s3

log = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."


# -- diffusers -> original LDM key mapping ------------------------------------------------------------


def unet_key_map(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(LDM prefix, diffusers prefix) pairs for a UNet2DConditionModel with the given config."""
    n_blocks = len(config["block_out_channels"])
    layers = int(config["layers_per_block"])
    down_attn = ["CrossAttn" in t for t in config["down_block_types"]]
    up_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    pairs: list[tuple[str, str]] = []
    for i in range(n_blocks):
        for j in range(layers):
            sd = f"input_blocks.{1 + i * (layers + 1) + j}."
            pairs.append((sd + "0.", f"down_blocks.{i}.resnets.{j}."))
            if down_attn[i]:
                pairs.append((sd + "1.", f"down_blocks.{i}.attentions.{j}."))
        if i < n_blocks - 1:
            pairs.append(
                (f"input_blocks.{(i + 1) * (layers + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv.")
            )
        for j in range(layers + 1):
            sd = f"output_blocks.{i * (layers + 1) + j}."
            pairs.append((sd + "0.", f"up_blocks.{i}.resnets.{j}."))
            if up_attn[i]:
                pairs.append((sd + "1.", f"up_blocks.{i}.attentions.{j}."))
        if i < n_blocks - 1:
            sd = f"output_blocks.{i * (layers + 1) + layers}.{2 if up_attn[i] else 1}."
            pairs.append((sd, f"up_blocks.{i}.upsamplers.0."))
    pairs.append(("middle_block.1.", "mid_block.attentions.0."))
    for j in range(2):
        pairs.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))
    return pairs


_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_RESNET = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
)


def convert_unet(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    pairs = unet_key_map(config)
    out = {}
    for key, value in state.items():
        new = key
        for hf, sd in _UNET_TOP.items():
            if key.startswith(hf):
                new = sd + key[len(hf) :]
                break
        else:
            for sd, hf in pairs:
                if key.startswith(hf):
                    rest = key[len(hf) :]
                    if "resnets." in hf:
                        for a, b in _RESNET:
                            if rest.startswith(a):
                                rest = b + rest[len(a) :]
                                break
                    new = sd + rest
                    break
            else:
                raise ConfigError(f"merge: UNet weight {key!r} has no place in the original layout")
        out[UNET_PREFIX + new] = value
    return out


_VAE_ATTN = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)


def convert_vae(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    n_blocks = len(config["block_out_channels"])
    layers = int(config["layers_per_block"])
    pairs: list[tuple[str, str]] = []
    for i in range(n_blocks):
        for j in range(layers):
            pairs.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        if i < n_blocks - 1:
            pairs.append((f"encoder.down.{i}.downsample.", f"encoder.down_blocks.{i}.downsamplers.0."))
            pairs.append((f"decoder.up.{n_blocks - 1 - i}.upsample.", f"decoder.up_blocks.{i}.upsamplers.0."))
        for j in range(layers + 1):
            pairs.append((f"decoder.up.{n_blocks - 1 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
    for part in ("encoder", "decoder"):
        for j in range(2):
            pairs.append((f"{part}.mid.block_{j + 1}.", f"{part}.mid_block.resnets.{j}."))
        pairs.append((f"{part}.mid.attn_1.", f"{part}.mid_block.attentions.0."))
        pairs.append((f"{part}.norm_out.", f"{part}.conv_norm_out."))
    out = {}
    for key, value in state.items():
        new = key
        for sd, hf in pairs:
            if key.startswith(hf):
                rest = key[len(hf) :]
                if "attentions" in hf:
                    for a, b in _VAE_ATTN:
                        if rest.startswith(a):
                            rest = b + rest[len(a) :]
                            break
                    if rest.endswith("weight") and value.ndim == 2:
                        value = value.reshape(*value.shape, 1, 1)  # linear -> 1x1 conv, as in LDM
                new = sd + rest.replace("conv_shortcut.", "nin_shortcut.")
                break
        out[VAE_PREFIX + new] = value
    return out


def convert_text_encoder(state: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        name = key if key.startswith("text_model.") else "text_model." + key
        out[CLIP_PREFIX + name] = value
    return out


def to_ldm_state_dict(pipe) -> dict[str, Any]:
    """The pipeline's UNet, VAE and CLIP text encoder as one original-layout (LDM) state dict."""
    state: dict[str, Any] = {}
    state.update(convert_unet(pipe.unet.state_dict(), dict(pipe.unet.config)))
    state.update(convert_vae(pipe.vae.state_dict(), dict(pipe.vae.config)))
    state.update(convert_text_encoder(pipe.text_encoder.state_dict()))
    return state


# -- merge ----------------------------------------------------------------------------------------------


def fuse_adapters(pipe, loras: Sequence[LoraSpec]) -> list[dict[str, Any]]:
    """Load the adapters, fuse them at their scales into the base weights and drop the LoRA layers."""
    from dermgen.hashing import sha256_file
    from dermgen.pipeline import check_lora_file

    names, recorded = [], []
    for k, spec in enumerate(loras):
        local = spec.path
        if is_s3(local):
            from dermgen.store import download_to_cache

            local = str(download_to_cache(local))
        check_lora_file(local)
        name = f"{spec.name}_{k}"
        try:
            pipe.load_lora_weights(local, adapter_name=name)
        except Exception as exc:
            raise ConfigError(f"--lora: {spec.path!r} is incompatible with the base model: {exc}") from exc
        names.append(name)
        recorded.append({"path": spec.path, "sha256": sha256_file(local), "scale": spec.scale})
    pipe.set_adapters(names, adapter_weights=[s.scale for s in loras])
    pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
    pipe.unload_lora_weights()
    return recorded


def merge_lora(
    model: str,
    loras: Sequence[LoraSpec],
    output: str | Path,
    *,
    half: bool = False,
    allow_pickle: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """Write ``model`` with ``loras`` baked in to ``output`` (.safetensors: LDM single file; else a folder)."""
    import torch
    from safetensors.torch import save_file

    from dermgen.hashing import sha256_file, sha256_tree, short_hash
    from dermgen.models import load_pipeline, resolve_model

    if not loras:
        raise ConfigError("--lora: give at least one adapter as PATH[:SCALE]")
    out = Path(output).expanduser()
    resolved = resolve_model(model, allow_pickle=allow_pickle)
    pipe, identity = load_pipeline(resolved, device=device, dtype="fp32")
    recorded = fuse_adapters(pipe, loras)
    dtype = torch.float16 if half else torch.float32
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in to_ldm_state_dict(pipe).items()}
        tmp = out.with_name(out.name + ".part")
        save_file(state, str(tmp), metadata={"format": "pt", "dermgen_merge": json.dumps(recorded)})
        tmp.replace(out)
        base_yaml = Path(resolved.path).with_suffix(".yaml") if resolved.path else None
        if base_yaml is not None and base_yaml.is_file():
            shutil.copyfile(base_yaml, out.with_suffix(".yaml"))  # the web UIs look for <name>.yaml
        sha = sha256_file(out, cache=False)
        layout, record_path = "ldm_single_file", out.with_name(out.name + ".merge.json")
    else:
        pipe.to(dtype=dtype)
        pipe.save_pretrained(str(out), safe_serialization=True)
        sha = sha256_tree(out)
        layout, record_path = "diffusers", out / "merge.json"
    record = {
        "output": str(out),
        "layout": layout,
        "sha256": sha,
        "short_hash": short_hash(sha),
        "dtype": str(dtype).replace("torch.", ""),
        "base_model": identity.to_dict(),
        "loras": recorded,
    }
    record_path.write_text(json.dumps(record, indent=2, sort_keys=True))
    log.info("merged %d adapter(s) into %s (%s, sha256 %s)", len(recorded), out, layout, short_hash(sha))
    return record


class MergeLoraConfig(BaseModel):
    """Everything `dermgen merge-lora` accepts."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("derm-t2im", description="derm-t2im | tiny | diffusers folder | .safetensors | s3://")
    lora: list[str] = Field(
        min_length=1,
        description="adapter PATH[:SCALE]; a folder means its pytorch_lora_weights.safetensors",
    )
    output: str = Field(description="*.safetensors (original single-file layout) or a folder")
    half: bool = Field(False, description="store fp16 weights (half the size)")
    allow_pickle: bool = Field(False, description="allow pickled .ckpt/.bin checkpoints")
    device: str = Field("cpu", description="device the weights are fused on")


def lora_spec(text: str) -> LoraSpec:
    """`PATH[:SCALE]`, where a training output folder stands for its adapter file."""
    spec = LoraSpec.parse(text)
    p = Path(spec.path)
    if p.is_dir() and (p / "pytorch_lora_weights.safetensors").is_file():
        spec = LoraSpec(str(p / "pytorch_lora_weights.safetensors"), spec.scale)
    return spec


def merge_from_config(config: MergeLoraConfig) -> dict[str, Any]:
    """:func:`merge_lora` with the options of a MergeLoraConfig; returns the merge record."""
    return merge_lora(
        config.model,
        [lora_spec(t) for t in config.lora],
        config.output,
        half=config.half,
        allow_pickle=config.allow_pickle,
        device=config.device,
    )
