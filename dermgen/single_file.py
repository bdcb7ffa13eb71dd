"""Offline loading of Stable Diffusion 1.x single-file checkpoints (original LDM layout) and their web UI hashes.

The study published Derm-T2IM as one `.safetensors` file in the original CompVis/LDM key layout with its
`Derm-T2IM.yaml` beside it, the way desktop web UIs (A1111) store models. diffusers converts such files with
`StableDiffusionPipeline.from_single_file`, but it reads the diffusers-format configs it cannot derive from
the LDM yaml (scheduler, tokenizer, text encoder sizes) from the hub unless it is given a local folder. This
package ships that folder for SD 1.5 (`configs/sd15`, including the full CLIP BPE tokenizer) and the standard
`configs/v1-inference.yaml`, so loading never touches the network.

For a checkpoint `X.safetensors` the configs are looked up in this order:

- original (LDM) config: the ``original_config`` argument, else `X.yaml` beside the checkpoint, else the
  packaged `v1-inference.yaml`;
- diffusers config folder: the ``config_dir`` argument, else a folder `X.config/` beside the checkpoint that
  holds a `model_index.json` (for non-standard sizes, e.g. the test suite's tiny model), else the packaged
  `sd15` folder.

Before anything heavy is loaded, `inspect_single_file` reads the safetensors header (tensor names and shapes
only), checks it against those configs and maps it the way diffusers will onto models built on the meta
device (about a second, no weights). A truncated download, a Git LFS pointer, an SD 2.x/SDXL checkpoint, a
LoRA or a VAE given as the model, a missing or mis-shaped weight all fail with a ConfigError that names the
file and the reason, instead of diffusers' late errors or silently uninitialised weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dermgen.errors import ConfigError
from dermgen.hashing import sha256_file

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
SD15_CONFIG_DIR = CONFIG_DIR / "sd15"
V1_INFERENCE_YAML = CONFIG_DIR / "v1-inference.yaml"
SIDECAR_CONFIG_SUFFIX = ".config"

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


@dataclass(frozen=True)
class CheckpointHeader:
    """Tensor names and shapes of a .safetensors file, read without loading any weights."""

    path: str
    shapes: dict[str, tuple[int, ...]]
    metadata: dict[str, str]

    def shape(self, key: str) -> tuple[int, ...] | None:
        return self.shapes.get(key)

    def has_prefix(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.shapes)


def read_safetensors_header(path: str | Path) -> CheckpointHeader:
    """Parse the header of a .safetensors file and check that the file holds all the bytes it announces."""
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
        if head == b"version ":
            raise ConfigError(
                f"--model: {str(p)!r} is a Git LFS pointer file ({size} bytes), not the weights; "
                "fetch the real file (git lfs pull, or download it again)"
            )
        if len(head) < 8:
            raise ConfigError(f"--model: {str(p)!r} is not a safetensors file: only {size} bytes")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or n > size - 8:
            raise ConfigError(
                f"--model: {str(p)!r} is not a valid safetensors file (header length {n} does not fit in "
                f"{size} bytes); expected a Stable Diffusion .safetensors checkpoint"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw)
        metadata = header.pop("__metadata__", None) or {}
        shapes = {k: tuple(int(d) for d in v["shape"]) for k, v in header.items()}
        end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    except (ValueError, KeyError, TypeError, IndexError):
        raise ConfigError(
            f"--model: {str(p)!r} has an unreadable safetensors header; expected a Stable Diffusion "
            ".safetensors checkpoint"
        ) from None
    if 8 + n + end > size:
        raise ConfigError(
            f"--model: {str(p)!r} is truncated: {size} bytes on disk, the header announces {8 + n + end}; "
            "the download or copy did not finish"
        )
    return CheckpointHeader(str(p), shapes, metadata)


def find_original_config(path: str | Path) -> Path:
    """`<checkpoint>.yaml` beside the checkpoint when it exists, else the packaged v1-inference.yaml."""
    side = Path(path).with_suffix(".yaml")
    return side if side.is_file() else V1_INFERENCE_YAML


def find_config_dir(path: str | Path) -> Path:
    """`<checkpoint>.config/` beside the checkpoint when it holds a model_index.json, else the packaged sd15."""
    p = Path(path)
    side = p.with_name(p.stem + SIDECAR_CONFIG_SUFFIX)
    return side if (side / "model_index.json").is_file() else SD15_CONFIG_DIR


def read_original_config(path: str | Path) -> dict[str, Any]:
    """The LDM yaml as a dict; ConfigError unless it describes a latent diffusion UNet and autoencoder."""
    import yaml

    try:
        cfg = yaml.safe_load(Path(path).read_text())
        params = cfg["model"]["params"]
        unet = params["unet_config"]["params"]
        ddconfig = params["first_stage_config"]["params"]["ddconfig"]
        for key in ("in_channels", "model_channels", "channel_mult", "num_res_blocks", "context_dim"):
            unet[key]
        for key in ("ch", "ch_mult", "z_channels"):
            ddconfig[key]
    except OSError as exc:
        raise ConfigError(f"--model: cannot read the original config {str(path)!r}: {exc}") from None
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"--model: {str(path)!r} is not a Stable Diffusion (LDM) inference config: missing or invalid "
            f"{exc}; expected the layout of v1-inference.yaml (model.params.unet_config / first_stage_config)"
        ) from None
    return cfg


def check_sd1_checkpoint(header: CheckpointHeader, original: dict[str, Any], config_dir: Path) -> None:
    """Refuse checkpoints that are not SD 1.x or do not match the configs, with the reason, before loading."""
    name = repr(header.path)
    if header.has_prefix("conditioner.embedders."):
        raise ConfigError(
            f"--model: {name} is an SDXL checkpoint; dermgen loads Stable Diffusion 1.x checkpoints"
        )
    if header.has_prefix("cond_stage_model.model."):
        raise ConfigError(
            f"--model: {name} is a Stable Diffusion 2.x checkpoint (OpenCLIP text encoder); dermgen loads "
            "Stable Diffusion 1.x checkpoints (CLIP ViT-L/14 text encoder)"
        )
    if not header.has_prefix(UNET_PREFIX):
        hint = ""
        if any("lora" in k.lower() for k in header.shapes):
            hint = " It looks like a LoRA adapter: pass it with --lora PATH[:SCALE]."
        elif header.has_prefix("encoder.") and header.has_prefix("decoder."):
            hint = " It looks like a standalone VAE."
        elif header.has_prefix("down_blocks.") or header.has_prefix("unet."):
            hint = " It looks like diffusers-format weights: pass the diffusers pipeline folder instead."
        raise ConfigError(
            f"--model: {name} has no UNet weights in the original layout ({UNET_PREFIX}*); expected a Stable "
            f"Diffusion 1.x single-file checkpoint.{hint}"
        )
    if not header.has_prefix(VAE_PREFIX):
        raise ConfigError(
            f"--model: {name} has no VAE weights ({VAE_PREFIX}*); expected a full SD 1.x checkpoint"
        )
    if not header.has_prefix(CLIP_PREFIX):
        if header.has_prefix("cond_stage_model.transformer."):
            raise ConfigError(
                f"--model: {name} stores its text encoder in the old CLIP key layout "
                "(cond_stage_model.transformer.* without text_model.); re-save it with a current web UI or "
                "convert it to a diffusers folder"
            )
        raise ConfigError(
            f"--model: {name} has no CLIP text encoder weights ({CLIP_PREFIX}*); expected a full SD 1.x checkpoint"
        )

    unet = original["model"]["params"]["unet_config"]["params"]
    dd = original["model"]["params"]["first_stage_config"]["params"]["ddconfig"]
    conv_in = header.shape(UNET_PREFIX + "input_blocks.0.0.weight")
    if conv_in is not None:
        if conv_in[1] != unet["in_channels"]:
            kind = " (an inpainting model)" if conv_in[1] == 9 else ""
            raise ConfigError(
                f"--model: {name} has a UNet with {conv_in[1]} input channels{kind}, its config expects "
                f"{unet['in_channels']}; dermgen generates with text-to-image SD 1.x checkpoints"
            )
        if conv_in[0] != unet["model_channels"]:
            raise ConfigError(
                f"--model: {name} has UNet width {conv_in[0]}, its config expects model_channels="
                f"{unet['model_channels']}; give the matching <checkpoint>.yaml"
            )
    vae_in = header.shape(VAE_PREFIX + "encoder.conv_in.weight")
    if vae_in is not None and vae_in[0] != dd["ch"]:
        raise ConfigError(f"--model: {name} has VAE width {vae_in[0]}, its config expects ch={dd['ch']}")
    context = next(
        (
            s[-1]
            for k, s in header.shapes.items()
            if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight")
        ),
        None,
    )
    try:
        te = json.loads((config_dir / "text_encoder" / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"--model: cannot read the text encoder config in {str(config_dir)!r}: {exc}"
        ) from None
    tok = header.shape(CLIP_PREFIX + "embeddings.token_embedding.weight")
    hidden = tok[1] if tok else None
    if context is not None and context != unet["context_dim"]:
        raise ConfigError(
            f"--model: {name} has cross-attention width {context}, its config expects context_dim="
            f"{unet['context_dim']}; give the matching <checkpoint>.yaml"
        )
    if tok is not None and (hidden != te.get("hidden_size") or tok[0] != te.get("vocab_size")):
        raise ConfigError(
            f"--model: {name} has a text encoder of width {hidden} with {tok[0]} tokens, the config folder "
            f"{str(config_dir)!r} expects width {te.get('hidden_size')} with {te.get('vocab_size')} tokens "
            "(SD 1.x: 768 and 49408)"
        )
    layers = {k.split(".")[5] for k in header.shapes if k.startswith(CLIP_PREFIX + "encoder.layers.")}
    if layers and len(layers) != te.get("num_hidden_layers"):
        raise ConfigError(
            f"--model: {name} has {len(layers)} text encoder layers, the config folder {str(config_dir)!r} "
            f"expects {te.get('num_hidden_layers')}"
        )


def check_weights_complete(header: CheckpointHeader, original: dict[str, Any], config_dir: Path) -> None:
    """Map the header's names and shapes the way diffusers will, on the meta device (no weights, < 1 s).

    diffusers silently leaves weights that a checkpoint lacks uninitialised (on the meta device) and fails
    much later; this names the missing or mis-shaped weights before anything is loaded.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    fake = {k: torch.empty(s, device="meta") for k, s in header.shapes.items()}
    try:
        unet_cfg = create_unet_diffusers_config_from_ldm(original, fake)
        vae_cfg = create_vae_diffusers_config_from_ldm(original, fake)
        with torch.device("meta"):
            models = {
                "unet": UNet2DConditionModel.from_config(unet_cfg),
                "vae": AutoencoderKL.from_config(vae_cfg),
                "text_encoder": CLIPTextModel(
                    CLIPTextConfig.from_pretrained(str(config_dir / "text_encoder"))
                ),
            }
        converted = {
            "unet": convert_ldm_unet_checkpoint(fake, unet_cfg),
            "vae": convert_ldm_vae_checkpoint(fake, vae_cfg),
            "text_encoder": convert_ldm_clip_checkpoint(fake),
        }
    except Exception as exc:  # a config diffusers cannot build, or names it cannot map
        raise ConfigError(
            f"--model: {header.path!r} does not match its configs: {type(exc).__name__}: {exc}"
        ) from None
    if not hasattr(models["text_encoder"], "text_model"):  # CLIPTextModel is flattened in transformers >= 5.6
        converted["text_encoder"] = {
            k.removeprefix("text_model."): v for k, v in converted["text_encoder"].items()
        }
    for comp, model in models.items():
        expected = model.state_dict()
        got = converted[comp]
        missing = [k for k in expected if k not in got or got[k] is None]
        if missing:
            raise ConfigError(
                f"--model: {header.path!r} lacks {len(missing)} {comp} weight(s) (e.g. {missing[:3]}); it is "
                "not a complete SD 1.x checkpoint or does not match its config"
            )
        wrong = [
            (k, tuple(got[k].shape), tuple(t.shape)) for k, t in expected.items() if got[k].shape != t.shape
        ]
        if wrong:
            k, has, want = wrong[0]
            raise ConfigError(
                f"--model: {header.path!r} has {len(wrong)} {comp} weight(s) of the wrong shape (e.g. {k}: "
                f"{has}, the config expects {want}); give the matching <checkpoint>.yaml"
            )


@dataclass(frozen=True)
class SingleFilePlan:
    """What `load_single_file` will load: the checkpoint, its LDM yaml and its diffusers config folder."""

    path: Path
    original_config: Path
    config_dir: Path
    header: CheckpointHeader | None  # None for pickled files (cannot be inspected without loading them)


def inspect_single_file(
    path: str | Path, original_config: str | Path | None = None, config_dir: str | Path | None = None
) -> SingleFilePlan:
    """Resolve the configs and run every check that needs no weights (header only; about a second).

    Raises ConfigError naming the file and the reason; usable for validation before any GPU work.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--model: {str(p)!r} does not exist; expected an SD 1.x .safetensors checkpoint")
    original_path = Path(original_config) if original_config is not None else find_original_config(p)
    cfg_dir = Path(config_dir) if config_dir is not None else find_config_dir(p)
    if not (cfg_dir / "model_index.json").is_file():
        raise ConfigError(f"--model: config folder {str(cfg_dir)!r} has no model_index.json")
    original = read_original_config(original_path)
    header = None
    if p.suffix.lower() == ".safetensors":
        header = read_safetensors_header(p)
        check_sd1_checkpoint(header, original, cfg_dir)
        check_weights_complete(header, original, cfg_dir)
    return SingleFilePlan(p, original_path, cfg_dir, header)


def load_single_file(
    path: str | Path,
    torch_dtype: Any = None,
    original_config: str | Path | None = None,
    config_dir: str | Path | None = None,
):
    """Load an SD 1.x single-file checkpoint as a StableDiffusionPipeline without network access.

    No safety checker is loaded. Raises ConfigError naming the file and the reason when it cannot be used.
    """
    plan = inspect_single_file(path, original_config, config_dir)
    p, original_path, cfg_dir = plan.path, plan.original_config, plan.config_dir
    log.info("loading %s (original config %s, configs %s)", p, original_path, cfg_dir)

    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    bar_was_on = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()  # "Loading pipeline components" is noise in batch logs
    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(p),
            original_config=str(original_path),
            config=str(cfg_dir),
            local_files_only=True,
            torch_dtype=torch_dtype,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    except ConfigError:
        raise
    except Exception as exc:
        if "meta tensor" in str(exc):  # pickled files are not pre-checked: diffusers hit a missing weight
            raise ConfigError(
                f"--model: {str(p)!r} lacks some weights of the model its config describes; it is not a "
                "complete SD 1.x checkpoint or does not match its config"
            ) from exc
        raise ConfigError(
            f"--model: {str(p)!r} could not be loaded as a Stable Diffusion 1.x single-file checkpoint "
            f"(original config {str(original_path)!r}, configs {str(cfg_dir)!r}): {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        if bar_was_on:
            diffusers_logging.enable_progress_bar()
    _check_all_weights_loaded(pipe, str(p))
    return pipe


def _check_all_weights_loaded(pipe, path: str) -> None:
    """diffusers leaves weights the checkpoint lacks on the meta device; refuse such a half-loaded model."""
    for comp in ("unet", "vae", "text_encoder"):
        missing = [n for n, t in getattr(pipe, comp).state_dict().items() if t.device.type == "meta"]
        if missing:
            raise ConfigError(
                f"--model: {path!r} lacks {len(missing)} {comp} weight(s) (e.g. {missing[:3]}); it is not a "
                "complete SD 1.x checkpoint or does not match its config"
            )


# -- web UI hashes ---------------------------------------------------------------------------------------


def a1111_short_hash(path: str | Path) -> str:
    """The A1111 web UI's model hash (since 2023, "AutoV2"): the first 10 hex digits of the file's sha256.

    This is what dermgen records (`model_hash` in rows and the PNG `parameters` chunk, `short_hash` in
    run.json, next to the full `model_sha256`); Derm-T2IM's sample PNGs say `Model hash: 8d72386f9b`.
    """
    return sha256_file(path)[:10]


def a1111_legacy_hash(path: str | Path) -> str:
    """The old A1111 model hash (before 2023): sha256 of 64 KiB at offset 1 MiB, first 8 hex digits.

    Cheap (reads 64 KiB) but weak; only for matching images made by old web UI versions. Not recorded.
    """
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
