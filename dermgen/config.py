"""The generation job's configuration: one pydantic model, validated before any GPU work."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dermgen.errors import ConfigError
from dermgen.plan import DEFAULT_BLOCK, DEFAULT_CAP_FACTOR, DEFAULT_PLAN_VERSION, DEFAULT_SHARD_SIZE

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = "manifests/derm_t2im_6k.yaml"


class GenerateConfig(BaseModel):
    """Everything `jobs/generate_6k.py` / `dermgen generate` accept."""

    model_config = ConfigDict(extra="forbid")

    manifest: str = DEFAULT_MANIFEST
    model: str | None = None  # None: the manifest's model, else "derm-t2im"
    lora: list[str] = Field(default_factory=list)
    output: str = "outputs/derm-6k"
    limit: int | None = Field(None, gt=0)
    size: int | None = None
    filter: Literal["none", "default"] = "default"
    filter_overrides: dict[str, float | None] = Field(default_factory=dict)
    reference_dir: str | None = None
    clip_model: str | None = None
    save_dropped: bool = True
    cap_factor: float = Field(DEFAULT_CAP_FACTOR, ge=1.0, le=100.0)
    num_actors: int | None = Field(None, gt=0)
    cpus_per_actor: float = Field(1.0, gt=0)
    shard_size: int = Field(DEFAULT_SHARD_SIZE, gt=0, le=100_000)
    batch_size: int = Field(8, gt=0, le=256)
    # Samples per sampler/steps draw: None gives 8 in plan v1 and the batch size in v2 (see plan.py).
    block: int | None = Field(None, gt=0)
    # Planning rule: None keeps the version recorded in an existing run.json, and gives new runs v2.
    plan_version: Literal[1, 2] | None = None
    seed: int = Field(0, ge=0, lt=2**31)
    device: str | None = None
    dtype: Literal["auto", "fp16", "bf16", "fp32"] = "auto"
    compile: bool = False
    cuda_graphs: bool = False  # implies compile
    allow_pickle: bool = False
    force_new_run: bool = False
    dry_run: bool = False
    ray_address: str | None = None
    max_shard_retries: int = Field(3, ge=0)
    progress_interval: float = Field(10.0, gt=0)

    @field_validator("size")
    @classmethod
    def _size(cls, v: int | None) -> int | None:
        if v is not None and (v < 64 or v > 2048 or v % 8):
            raise ValueError("must be a multiple of 8 between 64 and 2048")
        return v

    @field_validator("cuda_graphs")
    @classmethod
    def _cuda_graphs(cls, v: bool, info) -> bool:
        device = info.data.get("device")
        if v and device and not str(device).startswith("cuda"):
            raise ValueError(f"CUDA graphs need a CUDA device, but --device is {device!r}")
        return v

    def resolved_plan_version(self) -> int:
        return self.plan_version or DEFAULT_PLAN_VERSION

    def resolved_block(self) -> int:
        if self.block is not None:
            return self.block
        return DEFAULT_BLOCK if self.resolved_plan_version() == 1 else self.batch_size

    def resolved_manifest(self) -> Path:
        p = Path(self.manifest)
        if not p.exists() and not p.is_absolute() and (REPO_ROOT / p).exists():
            return REPO_ROOT / p
        return p


def make_config(**kwargs) -> GenerateConfig:
    """Build a GenerateConfig, turning validation errors into one readable ConfigError."""
    try:
        return GenerateConfig(**{k: v for k, v in kwargs.items() if v is not None or k in ("limit",)})
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            field = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"--{field.replace('_', '-')}: {msg} (got {err.get('input')!r})")
        raise ConfigError("\n".join(lines)) from None
