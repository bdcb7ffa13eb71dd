"""Ray Train wiring of classifier validation: one mode trained data-parallel with TorchTrainer."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from dermgen.train.classifier_config import ClassifierConfig
from dermgen.train.classifier_data import prepare_data
from dermgen.train.classifier_loop import _seed_everything, train_one
from dermgen.train.classifier_models import build_model

log = logging.getLogger("dermgen.train.classifier")


# -- Ray Train ---------------------------------------------------------------------------------------


def _ray_train_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: rebuild data and model, train with a DistributedSampler, rank 0 checkpoints."""
    import ray.train
    import ray.train.torch

    cfg = ClassifierConfig(**loop_config["cfg"])
    mode = loop_config["mode"]
    logging.basicConfig(level=logging.INFO)
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    _seed_everything(cfg.seed)
    data = prepare_data(cfg.model_copy(update={"modes": [mode]}))
    model, mean, std = build_model(cfg.model, cfg.weights, size=cfg.model_size, image_size=cfg.image_size)
    model = ray.train.torch.prepare_model(model)
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    history: list[dict[str, Any]] = []
    model, history, best_epoch = train_one(
        cfg,
        data["train"][mode],
        data["val"],
        device=device,
        mean=mean,
        std=std,
        model=model,
        sampler_hook=ray.train.torch.prepare_data_loader,
        is_main=rank == 0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            core = getattr(model, "module", model)
            torch.save({k: v.cpu() for k, v in core.state_dict().items()}, os.path.join(tmp, "model.pt"))
            Path(tmp, "history.json").write_text(json.dumps({"history": history, "best_epoch": best_epoch}))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({"epochs": len(history)}, checkpoint=checkpoint)


def train_with_ray(
    cfg: ClassifierConfig, mode: str
) -> tuple[torch.nn.Module, list[dict[str, Any]], int, tuple[float, ...], tuple[float, ...]]:
    """Train one mode with TorchTrainer on `cfg.num_workers` workers.

    Returns the rank-0 model (selected weights), its history, the selected epoch and the normalisation.
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started = False
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False)
        started = True
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        use_gpu = gpus >= cfg.num_workers and (cfg.device is None or cfg.device.startswith("cuda"))
        if 0 < gpus < cfg.num_workers:
            log.warning(
                "--num-workers %d but the cluster has %d GPU(s): training on CPUs", cfg.num_workers, gpus
            )
        trainer = TorchTrainer(
            _ray_train_loop,
            train_loop_config={"cfg": cfg.model_dump(), "mode": mode},
            scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu),
            run_config=RunConfig(
                name=f"{cfg.model}-{mode}", storage_path=str(Path(cfg.output).resolve() / "ray_results")
            ),
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"Ray Train run for {mode} reported no checkpoint")
        with result.checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, "model.pt"), map_location="cpu")
            meta = json.loads(Path(d, "history.json").read_text())
    finally:
        if started:
            ray.shutdown()
    model, mean, std = build_model(cfg.model, cfg.weights, size=cfg.model_size, image_size=cfg.image_size)
    model.load_state_dict(state)
    return model, meta["history"], meta["best_epoch"], mean, std


def ray_available() -> bool:
    try:
        import ray.train.torch  # noqa: F401
    except ImportError:
        return False
    return True
