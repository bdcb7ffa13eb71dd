"""DreamBooth fine-tuning of Stable Diffusion with LoRA adapters (peft), as the Derm-T2IM study did.

The study (PAPER.md, "Fine-tuning", Table II) trained LoRA on 1,400 benign + 1,400 malignant ISIC images
with instance prompts "benign mole" / "malignant mole", batch 2, LoRA learning rate 1e-4, a constant
schedule with warmup, 8-bit AdamW, fp16, 512 px and the DDPM noise scheduler. :class:`LoraTrainConfig`
holds those values as defaults; :func:`train_lora` runs the job and writes

    <output>/pytorch_lora_weights.safetensors   diffusers LoRA format (`dermgen generate --lora PATH:SCALE`)
    <output>/lora_card.json                      base model, data fingerprint, hyperparameters, loss, versions
    <output>/logs/loss.csv                       one row per optimizer step (+ TensorBoard when installed)
    <output>/samples/step-XXXXX.png              the study's "learning samples": fixed prompts x seeds
    <output>/checkpoints/step-XXXXXXX/           LoRA weights, optimizer, LR schedule, scaler, RNG states

Resuming is exact: batch composition, flips, timesteps and noise are pure functions of (seed, micro-batch,
slot in the global batch), so a resumed run draws exactly what the uninterrupted run would have drawn; the
checkpoint restores weights, optimizer, LR schedule, grad scaler and the global RNG states (used by LoRA
dropout). The same property makes N data-parallel workers with batch B follow the run of one worker with
batch N*B (up to float reduction order). Multi-GPU runs go through Ray Train (`--num-workers N`); the
training loop itself only uses torch.distributed, so it runs the same with or without Ray.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dermgen.errors import ConfigError, DermgenError, missing_dependency
from dermgen.preprocess import ImageSource, list_sources, load_rgb, resize_center_crop

log = logging.getLogger(__name__)

WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
CHECKPOINTS = "checkpoints"
TRAINABLE_FILE = "trainable.safetensors"
STATE_FILE = "training_state.pt"
RNG_FILE = "rng_state.pt"
META_FILE = "state.json"
LOSS_CSV = "loss.csv"
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
LOSS_COLUMNS = ("step", "epoch", "loss", "instance_loss", "prior_loss", "lr", "seconds")
# Fields that may change between an interrupted run and its --resume without changing the result.
RESUME_FREE_FIELDS = frozenset(
    {
        "output",
        "resume",
        "stop_after",
        "max_steps",
        "epochs",
        "checkpointing_steps",
        "checkpoints_total_limit",
        "sample_steps",
        "sample_prompts",
        "sample_seeds",
        "sample_inference_steps",
        "sample_cfg_scale",
        "sample_sampler",
        "log_every",
        "device",
        "cache_limit_mb",
        "ray_address",
        "tensorboard",
        "data",
        "class_data",
        "model",
    }
)


class LoraTrainConfig(BaseModel):
    """Everything `jobs/train_lora.py` accepts; the defaults are the study's Table II."""

    model_config = ConfigDict(extra="forbid")

    model: str = "derm-t2im"
    data: str
    output: str
    allow_pickle: bool = False
    resolution: int = 512
    # length: max_steps wins; else epochs (default 120, the study's)
    max_steps: int | None = Field(None, gt=0)
    epochs: int | None = Field(None, gt=0)
    batch_size: int = Field(2, gt=0, le=1024)
    gradient_accumulation_steps: int = Field(1, gt=0, le=1024)
    # optimisation
    learning_rate: float = Field(1e-4, gt=0, le=1.0)
    text_encoder_lr: float | None = Field(None, gt=0, le=1.0)
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant_with_warmup"
    lr_warmup_steps: int = Field(500, ge=0)
    optimizer: Literal["auto", "adamw", "adamw8bit"] = "auto"
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_weight_decay: float = Field(1e-2, ge=0)
    adam_epsilon: float = Field(1e-8, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    gradient_checkpointing: bool = False
    # LoRA
    rank: int = Field(4, gt=0, le=1024)
    lora_alpha: float | None = Field(None, gt=0)  # None: = rank (scale 1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(UNET_TARGETS))
    train_text_encoder: bool = False
    text_encoder_target_modules: list[str] = Field(default_factory=lambda: list(TEXT_ENCODER_TARGETS))
    # DreamBooth
    instance_prompt: str = "{label} mole"
    class_data: str | None = None
    class_prompt: str = "skin mole"
    prior_loss_weight: float = Field(1.0, ge=0)
    random_flip: bool = False
    noise_offset: float = Field(0.0, ge=0, le=1)
    seed: int = Field(0, ge=0, lt=2**31)
    # bookkeeping
    device: str | None = None
    checkpointing_steps: int = Field(500, gt=0)
    checkpoints_total_limit: int = Field(3, gt=0)
    resume: bool = False
    stop_after: int | None = Field(None, gt=0)  # stop (with a checkpoint) after this step, as if interrupted
    sample_steps: int = Field(500, ge=0)  # 0 = no learning samples
    sample_prompts: list[str] | None = None  # None: the instance prompt of every label
    sample_seeds: list[int] = Field(default_factory=lambda: [0, 1])
    sample_inference_steps: int = Field(25, gt=0, le=1000)
    sample_cfg_scale: float = Field(7.0, ge=0)
    sample_sampler: str = "Euler"
    log_every: int = Field(50, gt=0)
    tensorboard: bool = True
    cache_limit_mb: int = Field(2048, ge=0)  # decoded training images are kept in RAM up to this size
    # data parallel (Ray Train)
    num_workers: int = Field(1, gt=0, le=512)
    ray_address: str | None = None

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: int) -> int:
        if v < 32 or v > 2048 or v % 8:
            raise ValueError("must be a multiple of 8 between 32 and 2048")
        return v

    @field_validator("instance_prompt", "class_prompt")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            v.format(label="benign")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"must be a prompt template whose only placeholder is {{label}} ({exc})"
            ) from None
        return v

    @field_validator("target_modules", "text_encoder_target_modules")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        if not v or any(not t.strip() for t in v):
            raise ValueError("must name at least one module, e.g. to_q,to_k,to_v,to_out.0")
        return v

    @field_validator("sample_sampler")
    @classmethod
    def _sampler(cls, v: str) -> str:
        from dermgen.samplers import check_sampler

        return check_sampler(v)

    @model_validator(mode="after")
    def _length(self) -> LoraTrainConfig:
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError("give --max-steps or --epochs, not both")
        return self

    @property
    def alpha(self) -> float:
        return float(self.lora_alpha if self.lora_alpha is not None else self.rank)

    def resume_key(self) -> dict[str, Any]:
        """The fields a checkpoint must agree on to be resumed (everything that changes the trajectory)."""
        d = self.model_dump()
        return {k: v for k, v in sorted(d.items()) if k not in RESUME_FREE_FIELDS}


def make_train_config(**kwargs: Any) -> LoraTrainConfig:
    """Build a LoraTrainConfig, turning validation errors into one ConfigError naming field, value, expectation."""
    try:
        return LoraTrainConfig(**{k: v for k, v in kwargs.items() if v is not None})
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            field = ".".join(str(p) for p in err["loc"]) or "arguments"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"--{field.replace('_', '-')}: {msg} (got {err.get('input')!r})")
        raise ConfigError("\n".join(lines)) from None


@dataclass
class TrainResult:
    """What a training call produced (paths are None when it stopped early with --stop-after)."""

    output: str
    weights: str | None
    card: str | None
    steps: int
    total_steps: int
    final_loss: float | None
    interrupted: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- determinism ------------------------------------------------------------------------------------


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from the sha256 of the parts: stable across processes, machines and resumes."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled order of the n training images in one epoch (same on every rank)."""
    return np.random.default_rng(derived_seed(seed, "order", epoch)).permutation(n)


@dataclass(frozen=True)
class Layout:
    """How optimizer steps map onto micro-batches and images: rank r of W takes slots [r*B, (r+1)*B)."""

    n_images: int
    batch_size: int
    world: int
    accumulation: int

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world

    @property
    def micro_per_epoch(self) -> int:
        return self.n_images // self.global_batch

    def position(self, micro: int) -> tuple[int, int]:
        """(epoch, position within the epoch) of a global micro-batch index."""
        return divmod(micro, self.micro_per_epoch)

    def indices(self, seed: int, micro: int, rank: int) -> list[int]:
        epoch, pos = self.position(micro)
        order = epoch_order(seed, epoch, self.n_images)
        start = pos * self.global_batch + rank * self.batch_size
        return [int(i) for i in order[start : start + self.batch_size]]


def rng_states() -> dict[str, Any]:
    import torch

    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- data -------------------------------------------------------------------------------------------


def prompt_for(template: str, label: str) -> str:
    """The prompt of a label: '{label} mole' -> 'benign mole' (underscores in folder names become spaces)."""
    return template.format(label=label.replace("_", " ")).strip()


class ImageBank:
    """Training images decoded and resized on demand, kept in RAM up to a byte budget, prefetched on a thread."""

    def __init__(self, sources: Sequence[ImageSource], resolution: int, cache_limit_mb: int) -> None:
        self.sources = list(sources)
        self.resolution = resolution
        per_image = resolution * resolution * 3
        self.cache_enabled = per_image * len(self.sources) <= cache_limit_mb * 1024 * 1024
        self._cache: dict[int, np.ndarray] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dermgen-data")
        self._pending: dict[tuple, Future] = {}

    def __len__(self) -> int:
        return len(self.sources)

    def image(self, i: int) -> np.ndarray:
        img = self._cache.get(i)
        if img is None:
            src = self.sources[i]
            try:
                img = resize_center_crop(load_rgb(src.read()), self.resolution)
            except Exception as exc:
                raise DermgenError(f"--data: cannot read training image {src.origin!r}: {exc}") from exc
            if self.cache_enabled:
                self._cache[i] = img
        return img

    def batch(self, indices: Sequence[int], flips: Sequence[bool]) -> np.ndarray:
        """uint8 [n, H, W, 3] with the requested horizontal flips."""
        imgs = [self.image(i)[:, ::-1] if f else self.image(i) for i, f in zip(indices, flips, strict=True)]
        return np.stack(imgs)

    def prefetch(self, indices: Sequence[int], flips: Sequence[bool]) -> None:
        key = (tuple(indices), tuple(flips))
        if key not in self._pending:
            self._pending[key] = self._pool.submit(self.batch, indices, flips)

    def get(self, indices: Sequence[int], flips: Sequence[bool]) -> np.ndarray:
        fut = self._pending.pop((tuple(indices), tuple(flips)), None)
        return fut.result() if fut is not None else self.batch(indices, flips)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# -- the job ------------------------------------------------------------------------------------------


def train_lora(config: LoraTrainConfig) -> TrainResult:
    """Run a fine-tuning job: one process, or `num_workers` data-parallel Ray Train workers."""
    if config.num_workers > 1:
        return _train_with_ray(config)
    return Trainer(config, rank=0, world=1).run()


def _train_with_ray(config: LoraTrainConfig) -> TrainResult:
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


class Trainer:
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

        from dermgen.pipeline import default_device, load_pipeline, resolve_model
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


# -- command line ---------------------------------------------------------------------------------------

EXAMPLES = """examples:
  python jobs/train_lora.py --model tiny --data /work/shared/data/derm-t2im-samples --output /tmp/lora \\
      --resolution 64 --max-steps 200
  python jobs/train_lora.py --model derm-t2im --data isic-512/ --output adapters/isic --epochs 120
  python jobs/train_lora.py --model derm-t2im --data isic-512/ --output adapters/isic --resume
  python jobs/train_lora.py --data s3://bucket/isic-512 --output /shared/adapters/isic --num-workers 4
  python jobs/train_lora.py merge --model derm-t2im --lora adapters/isic:0.8 --output merged.safetensors
"""


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    d = LoraTrainConfig.model_fields
    p = argparse.ArgumentParser(
        prog="train_lora.py",
        description="DreamBooth + LoRA fine-tuning of Stable Diffusion (defaults: the Derm-T2IM study's Table II). "
        "'train_lora.py merge --help' bakes an adapter into a checkpoint.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    p.add_argument(
        "--model", default="derm-t2im", help="derm-t2im | tiny | diffusers folder | .safetensors | s3://"
    )
    p.add_argument("--data", required=True, help="folder <root>/<label>/*.png|jpg or a run (folder or s3://)")
    p.add_argument("--output", required=True, help="local folder (shared by all workers with --num-workers)")
    p.add_argument("--resolution", type=int, default=d["resolution"].default)
    length = p.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=int, default=None, help="optimizer steps (wins over epochs)")
    length.add_argument("--epochs", type=int, default=None, help="epochs over the data (default 120)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"].default, help="per worker (default 2)")
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--learning-rate", "--lr", type=float, default=d["learning_rate"].default)
    p.add_argument("--text-encoder-lr", type=float, default=None, help="default: --learning-rate")
    p.add_argument(
        "--lr-scheduler",
        default=d["lr_scheduler"].default,
        choices=["constant", "constant_with_warmup", "linear", "cosine"],
    )
    p.add_argument("--lr-warmup-steps", type=int, default=d["lr_warmup_steps"].default)
    p.add_argument(
        "--optimizer",
        default="auto",
        choices=["auto", "adamw", "adamw8bit"],
        help="auto: 8-bit AdamW with bitsandbytes on CUDA, else torch AdamW",
    )
    p.add_argument(
        "--weight-decay", dest="adam_weight_decay", type=float, default=d["adam_weight_decay"].default
    )
    p.add_argument("--max-grad-norm", type=float, default=d["max_grad_norm"].default)
    p.add_argument(
        "--mixed-precision",
        default="auto",
        choices=["auto", "no", "fp16", "bf16"],
        help="auto: fp16 on CUDA, fp32 on CPU",
    )
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--rank", type=int, default=d["rank"].default, help="LoRA rank r")
    p.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: = rank)")
    p.add_argument("--lora-dropout", type=float, default=0.0)
    p.add_argument("--target-modules", type=_csv_list, default=None, help="default: to_q,to_k,to_v,to_out.0")
    p.add_argument("--train-text-encoder", action="store_true", help="also train LoRA on the text encoder")
    p.add_argument("--instance-prompt", default=d["instance_prompt"].default, help="template with {label}")
    p.add_argument("--class-data", default=None, help="class images for prior preservation (same layouts)")
    p.add_argument("--class-prompt", default=d["class_prompt"].default, help="template, may use {label}")
    p.add_argument("--prior-loss-weight", type=float, default=d["prior_loss_weight"].default)
    p.add_argument("--random-flip", action="store_true")
    p.add_argument("--noise-offset", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--checkpointing-steps", type=int, default=d["checkpointing_steps"].default)
    p.add_argument("--checkpoints-total-limit", type=int, default=d["checkpoints_total_limit"].default)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint under --output")
    p.add_argument(
        "--stop-after", type=int, default=None, help="stop after this step with a checkpoint (testing)"
    )
    p.add_argument(
        "--sample-steps", type=int, default=d["sample_steps"].default, help="0: no learning samples"
    )
    p.add_argument(
        "--sample-prompts",
        type=lambda s: [t for t in s.split("|") if t],
        default=None,
        help="'|'-separated prompts (default: the instance prompt of each label)",
    )
    p.add_argument("--sample-seeds", type=_int_list, default=None, help="comma-separated (default 0,1)")
    p.add_argument("--sample-inference-steps", type=int, default=d["sample_inference_steps"].default)
    p.add_argument("--sample-sampler", default=d["sample_sampler"].default)
    p.add_argument("--log-every", type=int, default=d["log_every"].default)
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false")
    p.add_argument("--cache-limit-mb", type=int, default=d["cache_limit_mb"].default)
    p.add_argument(
        "--num-workers", type=int, default=1, help="data-parallel workers through Ray Train (GPUs)"
    )
    p.add_argument("--ray-address", default=None)
    p.add_argument("--allow-pickle", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> LoraTrainConfig:
    values = {k: v for k, v in vars(args).items() if k not in ("json", "verbose")}
    return make_train_config(**values)


def main(argv: Sequence[str] | None = None) -> int:
    """`python jobs/train_lora.py [merge] ...`: exit 0 on success, 2 on bad input, 1 on other errors."""
    from dermgen.cli import setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "merge":
        from dermgen.train.merge import main as merge_main

        return merge_main(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        from dermgen.pipeline import quiet_hf_logging

        quiet_hf_logging()
        result = train_lora(config_from_args(args))
    except DermgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130
    print(json.dumps(result.to_dict(), indent=2) if args.json else _summary_line(result))
    return 0


def _summary_line(r: TrainResult) -> str:
    if r.interrupted:
        return f"stopped at step {r.steps}/{r.total_steps}; continue with --resume ({r.output})"
    loss = "n/a" if r.final_loss is None else f"{r.final_loss:.4f}"
    return f"trained {r.steps} steps in {r.seconds:.0f}s, final loss {loss}: {r.weights} ({r.card})"


__all__ = [
    "LoraTrainConfig",
    "TrainResult",
    "Trainer",
    "build_parser",
    "epoch_order",
    "main",
    "make_train_config",
    "prompt_for",
    "train_lora",
]
