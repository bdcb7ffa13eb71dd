"""Ray Train wiring of LoRA fine-tuning: N data-parallel `Trainer` processes through TorchTrainer."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dermgen.errors import ConfigError, DermgenError, missing_dependency
from dermgen.train.lora_config import LoraTrainConfig, TrainResult
from dermgen.train.lora_trainer import Trainer


def train_with_ray(config: LoraTrainConfig) -> TrainResult:
    """Data-parallel training through Ray Train's TorchTrainer (one worker per GPU; gloo on CPU)."""
    try:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError:
        raise missing_dependency("ray[train]") from None
    if not ray.is_initialized():
        address = config.ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address)
        else:
            ray.init()
    use_gpu = (
        bool(ray.cluster_resources().get("GPU", 0)) if config.device is None else "cuda" in config.device
    )
    if use_gpu and ray.cluster_resources().get("GPU", 0) < config.num_workers:
        raise ConfigError(
            f"--num-workers: {config.num_workers} GPU workers requested, the Ray cluster has "
            f"{int(ray.cluster_resources().get('GPU', 0))} GPU(s)"
        )
    output = Path(config.output).expanduser().resolve()
    output.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config=config.model_copy(update={"output": str(output)}).model_dump(),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name="dermgen-train-lora", storage_path=str(output / "ray")),
    )
    result = trainer.fit()
    if getattr(result, "error", None):
        raise DermgenError(f"Ray Train run failed: {result.error}")
    return TrainResult(**json.loads((output / "logs" / "result.json").read_text()))


def _ray_worker(config_dict: dict[str, Any]) -> None:  # pragma: no cover - runs inside Ray Train workers
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    config = LoraTrainConfig(**config_dict)
    device = str(ray.train.torch.get_device())
    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(device)  # NCCL collectives (all_gather_object) use the current device
    Trainer(config, rank=ctx.get_world_rank(), world=ctx.get_world_size(), device=device).run()
