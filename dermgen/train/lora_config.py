"""The LoRA fine-tuning job's configuration (defaults: the study's Table II), its result, its file names."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dermgen.errors import validated

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

    model: str = Field("derm-t2im", description="derm-t2im | tiny | diffusers folder | .safetensors | s3://")
    data: str = Field(description="folder <root>/<label>/*.png|jpg or a run (folder or s3://)")
    output: str = Field(description="local folder (shared by all workers with --num-workers)")
    allow_pickle: bool = Field(False, description="allow pickled .ckpt/.bin checkpoints")
    resolution: int = Field(512, description="training side in pixels (multiple of 8)")
    # length: max_steps wins; else epochs (default 120, the study's)
    max_steps: int | None = Field(None, gt=0, description="optimizer steps")
    epochs: int | None = Field(
        None, gt=0, description="epochs over the data (default 120 when no --max-steps)"
    )
    batch_size: int = Field(2, gt=0, le=1024, description="images per micro-batch, per worker")
    gradient_accumulation_steps: int = Field(1, gt=0, le=1024, description="micro-batches per optimizer step")
    # optimisation
    learning_rate: float = Field(1e-4, gt=0, le=1.0, description="LoRA learning rate")
    text_encoder_lr: float | None = Field(None, gt=0, le=1.0, description="default: --learning-rate")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = Field(
        "constant_with_warmup", description="learning-rate schedule"
    )
    lr_warmup_steps: int = Field(500, ge=0, description="warm-up steps of the schedule")
    optimizer: Literal["auto", "adamw", "adamw8bit"] = Field(
        "auto", description="auto: 8-bit AdamW with bitsandbytes on CUDA, else torch AdamW"
    )
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW beta2")
    adam_weight_decay: float = Field(1e-2, ge=0, description="AdamW weight decay")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW epsilon")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto", description="auto: fp16 on CUDA, fp32 on CPU"
    )
    gradient_checkpointing: bool = Field(False, description="trade compute for memory")
    # LoRA
    rank: int = Field(4, gt=0, le=1024, description="LoRA rank r")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA alpha (default: = rank, scale 1)")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout")
    target_modules: list[str] = Field(
        default_factory=lambda: list(UNET_TARGETS), description="UNet modules given LoRA, comma-separated"
    )
    train_text_encoder: bool = Field(False, description="also train LoRA on the text encoder")
    text_encoder_target_modules: list[str] = Field(
        default_factory=lambda: list(TEXT_ENCODER_TARGETS),
        description="text-encoder modules given LoRA, comma-separated",
    )
    # DreamBooth
    instance_prompt: str = Field("{label} mole", description="prompt template with {label}")
    class_data: str | None = Field(None, description="class images for prior preservation (same layouts)")
    class_prompt: str = Field("skin mole", description="class prompt template, may use {label}")
    prior_loss_weight: float = Field(1.0, ge=0, description="weight of the prior-preservation loss")
    random_flip: bool = Field(False, description="random horizontal flips")
    noise_offset: float = Field(0.0, ge=0, le=1, description="noise offset")
    seed: int = Field(0, ge=0, lt=2**31, description="run seed")
    # bookkeeping
    device: str | None = Field(None, description="default: cuda when available, else cpu")
    checkpointing_steps: int = Field(500, gt=0, description="steps between checkpoints")
    checkpoints_total_limit: int = Field(3, gt=0, description="checkpoints kept")
    resume: bool = Field(False, description="continue from the latest checkpoint under --output")
    stop_after: int | None = Field(
        None, gt=0, description="stop after this step with a checkpoint, as if interrupted (testing)"
    )
    sample_steps: int = Field(500, ge=0, description="steps between learning samples (0: none)")
    sample_prompts: list[str] | None = Field(
        None, description="'|'-separated prompts (default: the instance prompt of each label)"
    )
    sample_seeds: list[int] = Field(default_factory=lambda: [0, 1], description="comma-separated seeds")
    sample_inference_steps: int = Field(25, gt=0, le=1000, description="denoising steps of the samples")
    sample_cfg_scale: float = Field(7.0, ge=0, description="guidance scale of the samples")
    sample_sampler: str = Field("Euler", description="sampler of the samples")
    log_every: int = Field(50, gt=0, description="steps between progress lines")
    tensorboard: bool = Field(True, description="TensorBoard logs when installed")
    cache_limit_mb: int = Field(2048, ge=0, description="decoded training images kept in RAM up to this size")
    # data parallel (Ray Train)
    num_workers: int = Field(1, gt=0, le=512, description="data-parallel workers through Ray Train (GPUs)")
    ray_address: str | None = Field(None, description="Ray cluster address (default: RAY_ADDRESS or local)")

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
    return validated(LoraTrainConfig, {k: v for k, v in kwargs.items() if v is not None})


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
