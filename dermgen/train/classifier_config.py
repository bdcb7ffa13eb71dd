"""The classifier validation job's configuration and the study's reference numbers (Table IV)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dermgen.errors import validated

MODEL_NAMES = {"mobilenet_v2": "MobileNet-V2", "vit_b_16": "ViT-B/16"}
STUDY_VIT = "google/vit-base-patch16-224-in21k"
MODES = ("baseline", "hybrid")

# The study's Table IV (test accuracy, %), shown next to ours for reference.
STUDY_TABLE_IV = {
    ("mobilenet_v2", "baseline"): {"ISIC Archive": 78.89, "HAM10000": 70.33},
    ("vit_b_16", "baseline"): {"ISIC Archive": 90.74, "HAM10000": 81.50},
    ("mobilenet_v2", "hybrid"): {"ISIC Archive": 81.35, "HAM10000": 73.58},
    ("vit_b_16", "hybrid"): {"ISIC Archive": 93.03, "HAM10000": 85.02},
}


class ClassifierConfig(BaseModel):
    """Everything `jobs/validate_classifier.py` accepts."""

    model_config = ConfigDict(extra="forbid")

    real: str = Field(description="real training images, <dir>/<label>/*.png|jpg")
    synthetic: str | None = Field(
        None, description="generated run (local folder or s3://bucket/prefix); needed for hybrid"
    )
    test: list[str] = Field(min_length=1, description="a real test folder; keyed by its name")
    model: Literal["mobilenet_v2", "vit_b_16"] = Field(description="classifier architecture")
    weights: str = Field("none", description="none (random init), a transformers model folder, or a hub name")
    model_size: Literal["full", "tiny"] = Field("full", description="tiny: reduced model for CPU runs")
    output: str = Field(description="folder for metrics.json, table.md, curves.png")
    epochs: int = Field(10, ge=1, description="training epochs per mode")
    image_size: int = Field(224, ge=32, le=1024, description="input side in pixels (multiple of 8)")
    batch_size: int = Field(32, ge=1, description="images per batch")
    lr: float | None = Field(
        None, gt=0, description="default: 2e-3/3e-4 (MobileNet/ViT, random init), 3e-4/5e-5 pretrained"
    )
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay")
    synthetic_ratio: float = Field(
        0.75, ge=0.0, lt=1.0, description="synthetic share of the hybrid training set"
    )
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0, description="share of --real held out for validation")
    select: Literal["best", "last"] = Field(
        "best", description="weights to evaluate: best validation epoch or last"
    )
    modes: list[Literal["baseline", "hybrid"]] = Field(
        default_factory=lambda: list(MODES), description="training sets to compare"
    )
    seed: int = Field(0, ge=0, description="seed of splits, initial weights and batch order")
    num_workers: int = Field(1, ge=1, description="> 1: data-parallel training with Ray Train (TorchTrainer)")
    loader_workers: int = Field(0, ge=0, description="DataLoader worker processes per trainer")
    device: str | None = Field(None, description="cpu, cuda, cuda:1 ... (default: cuda when available)")
    amp: bool = Field(True, description="bf16 autocast on GPU")
    label_aliases: bool = Field(
        True,
        description="accept nevus, melanoma and HAM10000 codes as folder names, not only benign/malignant",
    )
    save_models: bool = Field(False, description="save each mode's model under <output>/models/")
    cache_images: bool = Field(
        True, description="decode images once (resized to --image-size) in memory instead of every epoch"
    )
    cpu_threads: int | None = Field(
        None, ge=1, description="torch CPU threads (1 is fastest on a busy shared CPU)"
    )

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: int) -> int:
        if v % 8:
            raise ValueError("must be a multiple of 8")
        return v

    @model_validator(mode="after")
    def _hybrid_needs_run(self) -> ClassifierConfig:
        if "hybrid" in self.modes and not self.synthetic:
            raise ValueError("hybrid mode needs --synthetic RUN_URI (or --modes baseline)")
        if not self.modes:
            raise ValueError("modes: empty; expected baseline and/or hybrid")
        return self

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        pretrained = self.weights != "none"
        if self.model == "vit_b_16":
            return 5e-5 if pretrained else 3e-4
        return 3e-4 if pretrained else 2e-3

    def label_map(self):
        """The folder-name -> label mapping (`dermgen.data.labels.LabelMap`), with aliases unless disabled."""
        from dermgen.data.labels import LabelMap

        return LabelMap.with_aliases() if self.label_aliases else LabelMap()


def make_classifier_config(**kwargs: Any) -> ClassifierConfig:
    """Build a ClassifierConfig, turning validation errors into one readable ConfigError."""
    return validated(ClassifierConfig, {k: v for k, v in kwargs.items() if v is not None})
