"""Helpers shared by tests in every folder (importable as `support`: pytest's pythonpath has tests/)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = REPO_ROOT / "tests" / "assets"


def generate_run(
    output: str | Path,
    *,
    limit: int = 16,
    filter: str = "none",
    manifest: str | None = None,
    use_ray: bool = False,
    worker_cls=None,
    **kwargs,
) -> dict:
    """Generate a tiny-model run at 64 px (the 6k manifest, 20-26 steps, unless `manifest` is given).

    `worker_cls`: a `dermgen.worker.ShardWorker` subclass to run the shards with (fault injection)."""
    from dermgen.config import make_config
    from dermgen.runner import generate

    cfg = make_config(
        manifest=manifest or str(REPO_ROOT / "manifests" / "derm_t2im_6k.yaml"),
        model="tiny",
        output=str(output),
        limit=limit,
        size=64,
        filter=filter,
        shard_size=kwargs.pop("shard_size", 4),
        batch_size=kwargs.pop("batch_size", 4),
        **kwargs,
    )
    return generate(cfg, use_ray=use_ray, **({"worker_cls": worker_cls} if worker_cls else {}))


def make_lora(path: Path, *, rank: int = 4, alpha: int = 8, seed: int = 0) -> Path:
    """A random (non-zero) LoRA adapter for the tiny UNet, saved in diffusers format with its metadata."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from dermgen.tiny import tiny_components

    unet = tiny_components()["unet"]
    cfg = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
    )
    torch.manual_seed(seed)
    unet.add_adapter(cfg)
    path.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        str(path), unet_lora_layers=get_peft_model_state_dict(unet), unet_lora_adapter_metadata=cfg.to_dict()
    )
    return path / "pytorch_lora_weights.safetensors"
