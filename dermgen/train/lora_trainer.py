"""One LoRA training process: model and optimizer set-up, the DreamBooth loss, optimizer steps, the loop.

Data-parallel runs use only torch.distributed here, so the loop runs the same with or without Ray Train
(`dermgen.train.lora_ray`). Files written by the run are the :class:`TrainerOutputs` mixin's job.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dermgen.errors import ConfigError, missing_dependency
from dermgen.preprocess import ImageSource, list_sources
from dermgen.train.lora_config import CHECKPOINTS, LoraTrainConfig, TrainResult
from dermgen.train.lora_data import ImageBank, Layout, derived_seed, prompt_for
from dermgen.train.lora_outputs import TrainerOutputs

log = logging.getLogger("dermgen.train.lora")


class Trainer(TrainerOutputs):
    """One training process (rank `rank` of `world`); rank 0 writes every file."""

    def __init__(self, config: LoraTrainConfig, *, rank: int = 0, world: int = 1, device: str | None = None):
        self.cfg = config
        self.rank = rank
        self.world = world
        self.device_override = device
        self.output = Path(config.output).expanduser()
        self.is_main = rank == 0

    # -- setup ----------------------------------------------------------------------------------------
    def _setup(self) -> None:
        import torch

        from dermgen.models import default_device, load_pipeline, resolve_model
        from dermgen.train.lora_card import data_fingerprint

        cfg = self.cfg
        self.device = self.device_override or cfg.device or default_device()
        on_cuda = self.device.startswith("cuda")
        mp = cfg.mixed_precision
        if mp == "auto":
            mp = "fp16" if on_cuda else "no"
        if mp == "fp16" and not on_cuda:
            raise ConfigError(f"--mixed-precision: fp16 needs a CUDA device, got device {self.device!r}")
        self.mixed_precision = mp
        self.weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mp]

        # data first: a bad --data fails before the model loads
        self.sources = list_sources(cfg.data, arg="--data")
        self.labels = sorted({s.label for s in self.sources})
        self.layout = Layout(len(self.sources), cfg.batch_size, self.world, cfg.gradient_accumulation_steps)
        if self.layout.micro_per_epoch < 1:
            raise ConfigError(
                f"--batch-size: {cfg.batch_size} x {self.world} worker(s) is more than the {len(self.sources)} "
                f"training image(s) in {cfg.data!r}"
            )
        self.class_sources: list[ImageSource] = (
            list_sources(cfg.class_data, arg="--class-data") if cfg.class_data else []
        )
        self.data_fp = data_fingerprint(self.sources, cfg.data)
        self.class_fp = data_fingerprint(self.class_sources, cfg.class_data) if cfg.class_data else None
        if cfg.max_steps is not None:
            self.total_steps = cfg.max_steps
        else:
            epochs = cfg.epochs if cfg.epochs is not None else 120
            self.total_steps = max(1, epochs * self.layout.micro_per_epoch // cfg.gradient_accumulation_steps)
        self.bank = ImageBank(self.sources, cfg.resolution, cfg.cache_limit_mb)
        self.class_bank = ImageBank(self.class_sources, cfg.resolution, cfg.cache_limit_mb // 2)

        resolved = resolve_model(cfg.model, allow_pickle=cfg.allow_pickle)
        dtype_name = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}[mp]
        self.pipe, self.identity = load_pipeline(resolved, device=self.device, dtype=dtype_name)
        self._setup_model()
        self._setup_optimizer()

    def _setup_model(self) -> None:
        import torch
        from diffusers import DDPMScheduler
        from peft import LoraConfig

        cfg, pipe = self.cfg, self.pipe
        self.unet, self.vae, self.text_encoder, self.tokenizer = (
            pipe.unet,
            pipe.vae,
            pipe.text_encoder,
            pipe.tokenizer,
        )
        for m in (self.unet, self.vae, self.text_encoder):
            m.requires_grad_(False)
        self.vae.eval()
        self.text_encoder.eval()
        self.noise_scheduler = DDPMScheduler.from_config(
            {k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_")}
        )
        self.sample_scheduler_config = dict(pipe.scheduler.config)
        torch.manual_seed(cfg.seed)  # LoRA init ("gaussian" A, zero B) is the same on every rank
        self.unet_lora_config = LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.lora_dropout,
            init_lora_weights="gaussian",
            target_modules=list(cfg.target_modules),
        )
        try:
            self.unet.add_adapter(self.unet_lora_config)
        except ValueError as exc:
            raise ConfigError(
                f"--target-modules: {cfg.target_modules} do not match the UNet: {exc}"
            ) from None
        self.te_lora_config = None
        if cfg.train_text_encoder:
            self.te_lora_config = LoraConfig(
                r=cfg.rank,
                lora_alpha=cfg.alpha,
                lora_dropout=cfg.lora_dropout,
                init_lora_weights="gaussian",
                target_modules=list(cfg.text_encoder_target_modules),
            )
            from peft import inject_adapter_in_model

            try:  # transformers' own add_adapter wants a newer peft; diffusers loads the result either way
                inject_adapter_in_model(self.te_lora_config, self.text_encoder, adapter_name="default")
            except ValueError as exc:
                raise ConfigError(
                    f"--text-encoder-target-modules: {cfg.text_encoder_target_modules} do not match the "
                    f"text encoder: {exc}"
                ) from None
        if cfg.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            if cfg.train_text_encoder:
                te = self.text_encoder
                (getattr(te, "activation_checkpointing_enable", None) or te.gradient_checkpointing_enable)()
        self.trainable: dict[str, torch.nn.Parameter] = {}
        for prefix, module in (("unet", self.unet), ("text_encoder", self.text_encoder)):
            for name, p in module.named_parameters():
                if p.requires_grad:
                    p.data = p.data.float()  # LoRA weights train in fp32 under fp16/bf16 autocast
                    self.trainable[f"{prefix}.{name}"] = p
        if self.world > 1:
            import torch.distributed as dist

            for p in self.trainable.values():
                dist.broadcast(p.data, src=0)
        self.n_trainable = sum(p.numel() for p in self.trainable.values())
        self._prompt_cache: dict[str, Any] = {}

    def _setup_optimizer(self) -> None:
        import torch
        from diffusers.optimization import get_scheduler

        cfg = self.cfg
        groups = [
            {
                "params": [p for k, p in self.trainable.items() if k.startswith("unet.")],
                "lr": cfg.learning_rate,
            }
        ]
        te_params = [p for k, p in self.trainable.items() if k.startswith("text_encoder.")]
        if te_params:
            groups.append({"params": te_params, "lr": cfg.text_encoder_lr or cfg.learning_rate})
        kind = cfg.optimizer
        on_cuda = self.device.startswith("cuda")
        opt_cls = torch.optim.AdamW
        if kind in ("auto", "adamw8bit"):
            try:
                import bitsandbytes as bnb
            except ImportError:
                bnb = None
            if bnb is not None and on_cuda:
                opt_cls = bnb.optim.AdamW8bit
                self.optimizer_name = "bitsandbytes AdamW8bit"
            elif kind == "adamw8bit":
                if bnb is None:
                    raise missing_dependency("bitsandbytes", "gpu")
                raise ConfigError(f"--optimizer: adamw8bit needs a CUDA device, got device {self.device!r}")
            else:
                self.optimizer_name = "torch AdamW"
                if self.is_main:
                    why = "bitsandbytes is not installed" if bnb is None else "no CUDA device"
                    log.info("optimizer: torch AdamW (8-bit AdamW needs bitsandbytes and CUDA: %s)", why)
        else:
            self.optimizer_name = "torch AdamW"
        self.optimizer = opt_cls(
            groups,
            lr=cfg.learning_rate,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            weight_decay=cfg.adam_weight_decay,
            eps=cfg.adam_epsilon,
        )
        self.lr_scheduler = get_scheduler(
            cfg.lr_scheduler,
            optimizer=self.optimizer,
            num_warmup_steps=cfg.lr_warmup_steps,
            num_training_steps=self.total_steps,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.mixed_precision == "fp16")

    # -- one step -------------------------------------------------------------------------------------
    def _autocast(self):
        import torch

        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        return torch.autocast(device_type, dtype=self.weight_dtype, enabled=self.mixed_precision != "no")

    def _encode_prompts(self, prompts: Sequence[str]):
        import torch

        ids = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        if self.cfg.train_text_encoder:
            return self.text_encoder(ids)[0]
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if missing:
            with torch.no_grad():
                emb = self.text_encoder(ids[[list(prompts).index(p) for p in missing]])[0]
            for p, e in zip(missing, emb, strict=True):
                self._prompt_cache[p] = e
        return torch.stack([self._prompt_cache[p] for p in prompts])

    def _micro_plan(self, micro: int) -> dict[str, Any]:
        """Which images, flips, prompts and per-sample seeds one micro-batch of this rank uses."""
        cfg = self.cfg
        idx = self.layout.indices(cfg.seed, micro, self.rank)
        slots = [self.rank * cfg.batch_size + j for j in range(cfg.batch_size)]
        seeds = [derived_seed(cfg.seed, "sample", micro, s) for s in slots]
        flips = [cfg.random_flip and bool(np.random.default_rng(sd).random() < 0.5) for sd in seeds]
        prompts = [prompt_for(cfg.instance_prompt, self.sources[i].label) for i in idx]
        plan = {"idx": idx, "flips": flips, "seeds": seeds, "prompts": prompts}
        if self.class_sources:
            cseeds = [derived_seed(cfg.seed, "class", micro, s) for s in slots]
            cidx = [int(np.random.default_rng(sd).integers(len(self.class_sources))) for sd in cseeds]
            cflips = [cfg.random_flip and bool(np.random.default_rng(sd + 1).random() < 0.5) for sd in cseeds]
            plan.update(
                cidx=cidx,
                cflips=cflips,
                cseeds=cseeds,
                cprompts=[prompt_for(cfg.class_prompt, self.class_sources[i].label) for i in cidx],
            )
        return plan

    def _prefetch(self, micro: int) -> None:
        plan = self._micro_plan(micro)
        self.bank.prefetch(plan["idx"], plan["flips"])
        if self.class_sources:
            self.class_bank.prefetch(plan["cidx"], plan["cflips"])

    def _pixels(self, images: np.ndarray):
        import torch

        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return x.to(self.device, dtype=self.weight_dtype)

    def _loss(self, micro: int) -> tuple[Any, float, float]:
        """Loss of one micro-batch (instance + weighted prior); returns (loss tensor, instance, prior)."""
        import torch
        import torch.nn.functional as F

        plan = self._micro_plan(micro)
        images = self.bank.get(plan["idx"], plan["flips"])
        seeds, prompts = list(plan["seeds"]), list(plan["prompts"])
        n_inst = len(seeds)
        if self.class_sources:
            images = np.concatenate([images, self.class_bank.get(plan["cidx"], plan["cflips"])])
            seeds += plan["cseeds"]
            prompts += plan["cprompts"]
        pixels = self._pixels(images)
        sched = self.noise_scheduler
        with self._autocast():
            with torch.no_grad():
                dist = self.vae.encode(pixels).latent_dist
                mean, std = dist.mean.float(), dist.std.float()
            shape = tuple(mean.shape[1:])
            gens = [torch.Generator().manual_seed(s) for s in seeds]
            t = torch.cat(
                [torch.randint(0, sched.config.num_train_timesteps, (1,), generator=g) for g in gens]
            )
            eps = torch.stack([torch.randn(shape, generator=g) for g in gens])
            noise = torch.stack([torch.randn(shape, generator=g) for g in gens])
            if self.cfg.noise_offset:
                offs = torch.stack([torch.randn((shape[0], 1, 1), generator=g) for g in gens])
                noise = noise + self.cfg.noise_offset * offs
            eps, noise, t = eps.to(self.device), noise.to(self.device), t.to(self.device)
            latents = (mean + std * eps) * self.vae.config.scaling_factor
            noisy = sched.add_noise(latents, noise, t)
            emb = self._encode_prompts(prompts)
            pred = self.unet(noisy.to(self.weight_dtype), t, emb.to(self.weight_dtype)).sample.float()
            if sched.config.prediction_type == "v_prediction":
                target = sched.get_velocity(latents, noise, t)
            else:
                target = noise
            inst = F.mse_loss(pred[:n_inst], target[:n_inst])
            prior = F.mse_loss(pred[n_inst:], target[n_inst:]) if self.class_sources else torch.zeros(())
            loss = inst + self.cfg.prior_loss_weight * prior
        return loss, float(inst.detach()), float(prior.detach())

    def _sync_grads(self) -> None:
        import torch
        import torch.distributed as dist

        grads = [p.grad for p in self.trainable.values() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def _mean_across(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return (t / self.world).tolist()

    def train_step(self, step: int) -> dict[str, float]:
        """One optimizer step (gradient accumulation over micro-batches); returns its logged values."""
        import torch

        self.unet.train()
        if self.cfg.train_text_encoder:
            self.text_encoder.train()
        accum = self.cfg.gradient_accumulation_steps
        total = inst_sum = prior_sum = 0.0
        for a in range(accum):
            micro = step * accum + a
            self._prefetch(micro + 1)
            loss, inst, prior = self._loss(micro)
            self.scaler.scale(loss / accum).backward()
            total += float(loss.detach()) / accum
            inst_sum += inst / accum
            prior_sum += prior / accum
        if self.world > 1:
            self._sync_grads()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(list(self.trainable.values()), self.cfg.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.lr_scheduler.get_last_lr()[0]
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        total, inst_sum, prior_sum = self._mean_across([total, inst_sum, prior_sum])
        return {"loss": total, "instance_loss": inst_sum, "prior_loss": prior_sum, "lr": lr}

    # -- main loop ------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        t_start = time.perf_counter()
        cfg = self.cfg
        existing = self._checkpoint_dirs()
        if existing and not cfg.resume:
            raise ConfigError(
                f"--output: {str(self.output)!r} already holds a training run ({existing[-1].name}); "
                "pass --resume to continue it or choose another --output"
            )
        self._setup()
        start = 0
        if cfg.resume and existing:
            start = self.load_checkpoint(existing[-1])
            if self.is_main:
                log.info("resumed from %s (step %d of %d)", existing[-1], start, self.total_steps)
        elif cfg.resume and self.is_main:
            log.info("--resume: no checkpoint under %s, starting a new run", self.output / CHECKPOINTS)
        end = min(self.total_steps, cfg.stop_after) if cfg.stop_after else self.total_steps
        if self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            self._open_logs(start)
            log.info(
                "training LoRA r=%d alpha=%g on %s: %d image(s) %s, %d trainable parameters, steps %d..%d of %d, "
                "batch %d x %d worker(s) x %d accumulation, %s, mixed precision %s, device %s",
                cfg.rank,
                cfg.alpha,
                cfg.data,
                len(self.sources),
                self.data_fp["counts"],
                self.n_trainable,
                start,
                end,
                self.total_steps,
                cfg.batch_size,
                self.world,
                cfg.gradient_accumulation_steps,
                self.optimizer_name,
                self.mixed_precision,
                self.device,
            )
            if cfg.sample_steps and start == 0:
                self.render_samples(0)
        try:
            self._prefetch(start * cfg.gradient_accumulation_steps)
            t0 = time.perf_counter()
            step = start
            for step in range(start + 1, end + 1):
                values = self.train_step(step - 1)
                if self.is_main:
                    self._log_step(step, values, time.perf_counter() - t0)
                    if step % cfg.log_every == 0 or step == end:
                        rate = (step - start) / max(1e-9, time.perf_counter() - t0)
                        log.info(
                            "step %d/%d loss %.4f lr %.3g (%.2f steps/s)",
                            step,
                            self.total_steps,
                            values["loss"],
                            values["lr"],
                            rate,
                        )
                    if cfg.sample_steps and (step % cfg.sample_steps == 0 or step == self.total_steps):
                        self.render_samples(step)
                if step % cfg.checkpointing_steps == 0 or step == end:
                    self.save_checkpoint(step)
            step = max(step, start)
        finally:
            self.bank.close()
            self.class_bank.close()
            if self.is_main:
                self._close_logs()
        seconds = time.perf_counter() - t_start
        interrupted = step < self.total_steps
        weights = card = None
        if self.is_main and not interrupted:
            weights, card = self.export(step, seconds)
            log.info("wrote %s and %s", weights, card)
        elif self.is_main:
            log.info(
                "stopped after step %d of %d (--stop-after); continue with --resume", step, self.total_steps
            )
        result = TrainResult(
            output=str(self.output),
            weights=str(weights) if weights else None,
            card=str(card) if card else None,
            steps=step,
            total_steps=self.total_steps,
            final_loss=self.losses[-1] if self.is_main and self.losses else None,
            interrupted=interrupted,
            seconds=round(seconds, 2),
        )
        if self.is_main:
            (self.output / "logs" / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
        return result
