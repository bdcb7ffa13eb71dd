"""The generation job's configuration: one pydantic model, validated before any GPU work."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dermgen.errors import validated
from dermgen.plan import DEFAULT_BLOCK, DEFAULT_CAP_FACTOR, DEFAULT_PLAN_VERSION, DEFAULT_SHARD_SIZE
from dermgen.rundir.images import ImageLayout

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = "manifests/derm_t2im_6k.yaml"


class GenerateConfig(BaseModel):
    """Everything `jobs/generate_6k.py` / `dermgen generate` accept."""

    model_config = ConfigDict(extra="forbid")

    manifest: str = Field(DEFAULT_MANIFEST, description="YAML prompt manifest")
    model: str | None = Field(
        None,
        description="derm-t2im | tiny | local diffusers folder or .safetensors | s3:// URI "
        "(default: the manifest's model, else derm-t2im)",
    )
    lora: list[str] = Field(
        default_factory=list,
        description="LoRA adapter PATH[:SCALE] applied to every entry, with merge scale beta (repeatable)",
    )
    output: str = Field("outputs/derm-6k", description="local folder or s3://bucket/prefix")
    limit: int | None = Field(None, gt=0, description="shrink the manifest to N kept images, proportionally")
    size: int | None = Field(None, description="override every entry's size (square, multiple of 8)")
    filter: str = Field(
        "default",
        description="noise filter: default, none, or a profile YAML from `dermgen filter calibrate`",
    )
    filter_overrides: dict[str, float | None] = Field(
        default_factory=dict, description="filter thresholds replaced for the whole run (None: rule off)"
    )
    reference_dir: str | None = Field(
        None, description="folder of fine-tuning images; near copies of them are dropped (memorisation)"
    )
    clip_model: str | None = Field(None, description="local CLIP model folder for the optional CLIP score")
    save_dropped: bool = Field(True, description="keep dropped images for audit under images/dropped/")
    images: ImageLayout = Field(
        "files",
        description="where image bytes are stored: files (a PNG object per image beside the Parquet rows, "
        "browsable) or parquet (only inside the Parquet rows: one object per shard, half the storage; "
        "for runs of millions of images); bound to the run",
    )
    cap_factor: float = Field(
        DEFAULT_CAP_FACTOR,
        ge=1.0,
        le=100.0,
        description="most samples per entry, as a multiple of its kept target",
    )
    num_actors: int | None = Field(None, gt=0, description="generator actors (default: one per GPU)")
    cpus_per_actor: float = Field(
        1.0, gt=0, description="CPUs reserved per actor; on CPU-only machines also its torch threads"
    )
    shard_size: int = Field(DEFAULT_SHARD_SIZE, gt=0, le=100_000, description="samples per shard")
    batch_size: int = Field(8, gt=0, le=256, description="images per diffusion batch")
    block: int | None = Field(
        None,
        gt=0,
        description="samples per sampler/steps draw (default: 8 in plan v1, the batch size in v2; see plan.py)",
    )
    plan_version: Literal[1, 2] | None = Field(
        None, description="planning rule (default: the version of an existing run.json; new runs v2)"
    )
    seed: int = Field(0, ge=0, lt=2**31, description="run seed")
    device: str | None = Field(None, description="cuda | cpu (default: cuda when available)")
    dtype: Literal["auto", "fp16", "bf16", "fp32"] = Field("auto", description="weights and compute dtype")
    compile: bool = Field(False, description="torch.compile the UNet (warm-up at actor start)")
    cuda_graphs: bool = Field(
        False, description="also capture the compiled UNet in CUDA graphs (implies --compile; CUDA only)"
    )
    allow_pickle: bool = Field(False, description="allow pickled .ckpt/.bin checkpoints")
    force_new_run: bool = Field(
        False, description="delete a run at --output made from a different plan, and start over"
    )
    dry_run: bool = Field(False, description="print the plan and write nothing")
    ray_address: str | None = Field(
        None, description="Ray cluster address (default: RAY_ADDRESS or a local Ray)"
    )
    max_shard_retries: int = Field(3, ge=0, description="attempts of a failing shard before the run fails")
    claim_lease_s: float = Field(
        60.0,
        ge=1.0,
        le=3600.0,
        description="seconds a driver's claim on a shard lasts unless renewed; another driver on the same "
        "output takes over a shard whose claim has expired (a dead driver's claims expire after this)",
    )
    claim_renew_s: float = Field(
        15.0,
        gt=0,
        description="seconds between renewals of a driver's claims while their shards render (less than "
        "--claim-lease-s); a driver waiting on another driver's shards looks again at least this often",
    )
    progress_interval: float = Field(
        10.0, gt=0, description="seconds between progress lines when not on a terminal"
    )

    @field_validator("size")
    @classmethod
    def _size(cls, v: int | None) -> int | None:
        if v is not None and (v < 64 or v > 2048 or v % 8):
            raise ValueError("must be a multiple of 8 between 64 and 2048")
        return v

    @field_validator("filter")
    @classmethod
    def _filter(cls, v: str) -> str:
        if v in ("none", "default"):
            return v
        from dermgen.filters.calibrate import is_profile_path, load_profile

        if not is_profile_path(v):
            raise ValueError(f"expected 'default', 'none' or a filter profile *.yaml file, got {v!r}")
        load_profile(v)  # fail now, naming the file and the problem, not in a worker
        return str(Path(v).resolve())

    @field_validator("claim_renew_s")
    @classmethod
    def _claim_renew(cls, v: float, info) -> float:
        lease = info.data.get("claim_lease_s")
        if lease is not None and v >= lease:
            raise ValueError(f"must be less than --claim-lease-s ({lease:g}) so claims are renewed in time")
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
    return validated(GenerateConfig, {k: v for k, v in kwargs.items() if v is not None or k in ("limit",)})
