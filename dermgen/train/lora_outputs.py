"""What a LoRA training run writes: checkpoints (save, load, resume checks), loss logs, learning samples and
the exported adapter with its card. A mixin of :class:`dermgen.train.lora_trainer.Trainer`."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from dermgen.errors import ConfigError
from dermgen.train.lora_config import (
    CHECKPOINTS,
    LOSS_COLUMNS,
    LOSS_CSV,
    META_FILE,
    RNG_FILE,
    STATE_FILE,
    TRAINABLE_FILE,
    WEIGHTS_NAME,
)
from dermgen.train.lora_data import prompt_for, rng_states, set_rng_states

log = logging.getLogger("dermgen.train.lora")


class TrainerOutputs:
    """Checkpoints, logs, samples and export of a :class:`~dermgen.train.lora_trainer.Trainer` (rank 0 writes)."""

    # -- checkpoints ----------------------------------------------------------------------------------
    def _checkpoint_dirs(self) -> list[Path]:
        root = self.output / CHECKPOINTS
        if not root.is_dir():
            return []
        dirs = [
            p
            for p in root.iterdir()
            if p.is_dir() and p.name.startswith("step-") and (p / META_FILE).exists()
        ]
        return sorted(dirs, key=lambda p: int(p.name.split("-")[1]))

    def save_checkpoint(self, step: int) -> Path | None:
        import torch
        from safetensors.torch import save_file

        states = rng_states()
        if self.world > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, states)
        else:
            gathered = [states]
        if not self.is_main:
            return None
        self._csv_file.flush()  # the loss log must hold every step up to the checkpoint
        root = self.output / CHECKPOINTS
        final = root / f"step-{step:07d}"
        tmp = root / f".tmp-step-{step:07d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(
            {k: p.detach().float().cpu().contiguous() for k, p in self.trainable.items()},
            tmp / TRAINABLE_FILE,
        )
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": self.lr_scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
            },
            tmp / STATE_FILE,
        )
        torch.save(gathered, tmp / RNG_FILE)
        micro = step * self.cfg.gradient_accumulation_steps
        epoch, pos = self.layout.position(micro)
        meta = {
            "step": step,
            "next_micro_batch": micro,
            "epoch": epoch,
            "position_in_epoch": pos,
            "micro_batches_per_epoch": self.layout.micro_per_epoch,
            "total_steps": self.total_steps,
            "world": self.world,
            "resume_key": self.cfg.resume_key(),
            "base_model_sha256": self.identity.sha256,
            "data_sha256": self.data_fp["sha256"],
            "class_data_sha256": self.class_fp["sha256"] if self.class_fp else None,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in self._checkpoint_dirs()[: -self.cfg.checkpoints_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint %s", final)
        return final

    def load_checkpoint(self, path: Path) -> int:
        import torch
        from safetensors.torch import load_file

        meta = json.loads((path / META_FILE).read_text())
        self._check_resumable(meta, path)
        tensors = load_file(str(path / TRAINABLE_FILE))
        if set(tensors) != set(self.trainable):
            raise ConfigError(f"--resume: {path} holds different LoRA parameters than this configuration")
        with torch.no_grad():
            for k, p in self.trainable.items():
                p.copy_(tensors[k].to(p.device, p.dtype))
        state = torch.load(path / STATE_FILE, map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        rng = torch.load(path / RNG_FILE, weights_only=True)
        if len(rng) == self.world:
            set_rng_states(rng[self.rank])
        return int(meta["step"])

    def _check_resumable(self, meta: dict[str, Any], path: Path) -> None:
        problems = []
        old, new = meta["resume_key"], self.cfg.resume_key()
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                problems.append(f"--{k.replace('_', '-')}: checkpoint has {old.get(k)!r}, got {new.get(k)!r}")
        if meta["world"] != self.world:
            problems.append(f"--num-workers: checkpoint was made with {meta['world']}, got {self.world}")
        if meta["base_model_sha256"] != self.identity.sha256:
            problems.append("--model: the base model's weights differ from the checkpoint's")
        if meta["data_sha256"] != self.data_fp["sha256"]:
            problems.append("--data: the training images differ from the checkpoint's")
        class_sha = self.class_fp["sha256"] if self.class_fp else None
        if meta.get("class_data_sha256") != class_sha:
            problems.append("--class-data: the class images differ from the checkpoint's")
        schedule_uses_total = self.cfg.lr_scheduler not in ("constant", "constant_with_warmup")
        if schedule_uses_total and meta["total_steps"] != self.total_steps:
            problems.append(
                f"--max-steps/--epochs: the {self.cfg.lr_scheduler} schedule was built for "
                f"{meta['total_steps']} steps, got {self.total_steps}"
            )
        if problems:
            raise ConfigError(f"--resume: cannot continue {path}:\n  " + "\n  ".join(problems))

    # -- logs and samples -----------------------------------------------------------------------------
    def _open_logs(self, start_step: int) -> None:
        logs = self.output / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / LOSS_CSV
        rows: list[dict[str, str]] = []
        if path.exists() and start_step > 0:
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        self.losses = [float(r["loss"]) for r in rows]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOSS_COLUMNS)
            w.writeheader()
            w.writerows(rows)
        self._csv_file = path.open("a", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=LOSS_COLUMNS)
        self.tb = None
        if self.cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(logs / "tensorboard"), purge_step=start_step + 1)
            except Exception as exc:  # tensorboard not installed (or broken)
                log.info(
                    "TensorBoard logging skipped (%s: %s); the loss is in %s", type(exc).__name__, exc, path
                )

    def _log_step(self, step: int, values: dict[str, float], seconds: float) -> None:
        epoch = self.layout.position((step - 1) * self.cfg.gradient_accumulation_steps)[0]
        row = {"step": step, "epoch": epoch, "seconds": round(seconds, 3)}
        row.update({k: f"{v:.8g}" for k, v in values.items()})
        self._csv.writerow(row)
        self.losses.append(values["loss"])
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"train/{k}", v, step)

    def _close_logs(self) -> None:
        self._csv_file.close()
        if self.tb is not None:
            self.tb.close()

    def sample_prompts(self) -> list[str]:
        return self.cfg.sample_prompts or [prompt_for(self.cfg.instance_prompt, lb) for lb in self.labels]

    def render_samples(self, step: int) -> Path:
        """The learning samples: a grid of prompts (rows) x seeds (columns) at this step."""
        import torch
        from PIL import Image

        from dermgen.samplers import make_scheduler

        cfg = self.cfg
        prompts = self.sample_prompts()
        grid_prompts = [p for p in prompts for _ in cfg.sample_seeds]
        gens = [torch.Generator().manual_seed(int(s)) for _ in prompts for s in cfg.sample_seeds]
        self.unet.eval()
        self.text_encoder.eval()
        self.pipe.scheduler = make_scheduler(cfg.sample_sampler, self.sample_scheduler_config)
        with torch.no_grad(), self._autocast():
            images = self.pipe(
                prompt=grid_prompts,
                num_inference_steps=cfg.sample_inference_steps,
                guidance_scale=cfg.sample_cfg_scale,
                height=cfg.resolution,
                width=cfg.resolution,
                generator=gens,
                output_type="np",
            ).images
        images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
        rows, cols, r = len(prompts), len(cfg.sample_seeds), cfg.resolution
        grid = images.reshape(rows, cols, r, r, 3).transpose(0, 2, 1, 3, 4).reshape(rows * r, cols * r, 3)
        path = self.output / "samples" / f"step-{step:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(path)
        return path

    # -- export ---------------------------------------------------------------------------------------
    def export(self, step: int, seconds: float) -> tuple[Path, Path]:
        """Write the diffusers-format adapter and its card."""
        from diffusers import StableDiffusionPipeline
        from peft.utils import get_peft_model_state_dict

        from dermgen.provenance import environment
        from dermgen.train.lora_card import build_card, write_card

        kwargs: dict[str, Any] = {
            "unet_lora_layers": get_peft_model_state_dict(self.unet),
            "unet_lora_adapter_metadata": self.unet_lora_config.to_dict(),
        }
        if self.te_lora_config is not None:
            kwargs["text_encoder_lora_layers"] = get_peft_model_state_dict(self.text_encoder)
            kwargs["text_encoder_lora_adapter_metadata"] = self.te_lora_config.to_dict()
        StableDiffusionPipeline.save_lora_weights(str(self.output), weight_name=WEIGHTS_NAME, **kwargs)
        weights = self.output / WEIGHTS_NAME
        tail = self.losses[-max(1, min(100, len(self.losses) // 10 or 1)) :]
        hyper = self.cfg.model_dump()
        hyper.update(
            lora_alpha=self.cfg.alpha,
            instance_prompts={lb: prompt_for(self.cfg.instance_prompt, lb) for lb in self.labels},
            optimizer_used=self.optimizer_name,
            mixed_precision_used=self.mixed_precision,
            noise_scheduler={"class": "DDPMScheduler", "config": dict(self.noise_scheduler.config)},
            world_size=self.world,
            global_batch_size=self.layout.global_batch * self.cfg.gradient_accumulation_steps,
        )
        training = {
            "steps": step,
            "total_steps": self.total_steps,
            "epochs": round(step * self.cfg.gradient_accumulation_steps / self.layout.micro_per_epoch, 4),
            "micro_batches_per_epoch": self.layout.micro_per_epoch,
            "final_loss": self.losses[-1] if self.losses else None,
            "final_loss_mean": float(np.mean(tail)) if tail else None,
            "final_loss_window": len(tail),
            "first_loss": self.losses[0] if self.losses else None,
            "trainable_parameters": self.n_trainable,
            "seconds_this_session": round(seconds, 2),
            "device": self.device,
            "loss_log": "logs/loss.csv",
        }
        identity = self.identity.to_dict()
        card = build_card(
            base_model=identity,
            data=self.data_fp,
            class_data=self.class_fp,
            hyperparameters=hyper,
            training=training,
            adapter_path=weights,
            environment=environment(),
        )
        return weights, write_card(card, self.output)
