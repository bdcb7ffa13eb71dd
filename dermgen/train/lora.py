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

Modules: `lora_config` (options, result, file names), `lora_data` (images, determinism), `lora_trainer`
(one process: set-up, loss, loop), `lora_outputs` (checkpoints, logs, samples, export), `lora_ray` (Ray Train).
"""

from __future__ import annotations

from dermgen.train.lora_config import WEIGHTS_NAME, LoraTrainConfig, TrainResult, make_train_config
from dermgen.train.lora_data import Layout, epoch_order, prompt_for
from dermgen.train.lora_trainer import Trainer


def train_lora(config: LoraTrainConfig) -> TrainResult:
    """Run a fine-tuning job: one process, or `num_workers` data-parallel Ray Train workers."""
    if config.num_workers > 1:
        from dermgen.train.lora_ray import train_with_ray

        return train_with_ray(config)
    return Trainer(config, rank=0, world=1).run()


__all__ = [
    "WEIGHTS_NAME",
    "Layout",
    "LoraTrainConfig",
    "TrainResult",
    "Trainer",
    "epoch_order",
    "make_train_config",
    "prompt_for",
    "train_lora",
]
