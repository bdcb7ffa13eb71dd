"""Model loading and rendering: presets, single-file and diffusers checkpoints, LoRA adapters, samplers.

`Renderer` is the generate stage: it holds one diffusers pipeline on one device and turns a homogeneous
batch of samples (same sampler, steps, CFG and size) into uint8 images. It knows nothing about Ray.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dermgen.errors import ConfigError
from dermgen.hashing import sha256_file
from dermgen.models import (
    check_suffix,
    default_device,
    load_pipeline,
    resolve_model,
    unet_config_for,
)
from dermgen.samplers import make_scheduler, scheduler_description
from dermgen.uri import is_s3

log = logging.getLogger(__name__)

NOISE_SOURCES = ("cpu", "device")  # where per-sample generators live: host (plan v1) or the render device


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA adapter and its merge scale beta: W = W0 + beta * dW."""

    path: str
    scale: float = 1.0

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """Parse ``PATH[:SCALE]`` (the scale is the part after the last colon when it is a number)."""
        path, scale = text, 1.0
        head, sep, tail = text.rpartition(":")
        if sep and head and not tail.startswith("//"):
            try:
                scale = float(tail)
                path = head
            except ValueError:
                pass
        if not path:
            raise ConfigError(f"--lora: got {text!r}, expected PATH[:SCALE]")
        if not 0.0 <= scale <= 2.0:
            raise ConfigError(f"--lora: scale {scale} in {text!r} is out of range, expected 0 <= scale <= 2")
        return cls(path=path, scale=scale)

    @property
    def name(self) -> str:
        stem = Path(self.path.rstrip("/")).stem or "lora"
        return "".join(c if c.isalnum() else "_" for c in stem)


def _mark_cudagraph_step(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
    import torch

    torch.compiler.cudagraph_mark_step_begin()
    return callback_kwargs


def compile_mode(on_gpu: bool, cuda_graphs: bool) -> str:
    """torch.compile mode for the UNet: autotuned kernels on a GPU (plus CUDA graphs when asked); the
    default mode on a CPU, where autotuning only lengthens the warm-up."""
    if cuda_graphs:
        return "max-autotune"  # autotuned kernels replayed as CUDA graphs (static shapes: fixed batch)
    return "max-autotune-no-cudagraphs" if on_gpu else "default"


class Renderer:
    """One pipeline on one device: renders batches of samples that share sampler, steps, CFG and size.

    Every image gets its own seeded generator, so the same seed and batch size give the same pixels.
    With `pad_batches` (the default) batches are padded to `batch_size` so shapes never change (no
    recompiles of a compiled UNet); without it a short batch renders only its own samples.
    """

    def __init__(
        self,
        model: str = "tiny",
        *,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 8,
        allow_pickle: bool = False,
        fuse_lora: bool = True,
        channels_last: bool | None = None,
        compile: bool = False,
        cuda_graphs: bool = False,
        pad_batches: bool = True,
        noise: str = "cpu",
    ) -> None:
        if noise not in NOISE_SOURCES:
            raise ConfigError(f"noise: got {noise!r}, expected one of {', '.join(NOISE_SOURCES)}")
        self.noise = noise
        self.device = device or default_device()
        on_gpu = self.device.startswith("cuda")
        if cuda_graphs and not on_gpu:
            raise ConfigError(
                f"--cuda-graphs: CUDA graphs need a CUDA device, but this worker runs on {self.device!r}"
            )
        resolved = resolve_model(model, allow_pickle=allow_pickle)
        self.pipe, self.identity = load_pipeline(resolved, device=self.device, dtype=dtype)
        self.batch_size = batch_size
        self.pad_batches = pad_batches or compile or cuda_graphs
        self.cuda_graphs = cuda_graphs
        self.fuse_lora = fuse_lora
        self.allow_pickle = allow_pickle
        self._base_scheduler_config = dict(self.pipe.scheduler.config)
        self._schedulers: dict[str, Any] = {}
        self._loaded_loras: dict[str, dict[str, Any]] = {}  # adapter name -> provenance
        self._active: tuple[tuple[str, float], ...] = ()
        self._fused = False
        if channels_last if channels_last is not None else on_gpu:
            import torch

            self.pipe.unet.to(memory_format=torch.channels_last)
            self.pipe.vae.to(memory_format=torch.channels_last)
        if compile or cuda_graphs:
            import torch

            # Compiled in place (nn.Module.compile): `pipe.unet` stays the diffusers model, so diffusers'
            # LoRA calls still reach it (they skip a torch.compile wrapper, an OptimizedModule).
            self.pipe.unet.compile(mode=compile_mode(on_gpu, cuda_graphs), fullgraph=True)

    @property
    def device_name(self) -> str:
        import torch

        if self.device.startswith("cuda") and torch.cuda.is_available():
            return torch.cuda.get_device_name(torch.device(self.device))
        return self.device

    @property
    def dtype_name(self) -> str:
        return str(self.pipe.unet.dtype).replace("torch.", "")

    def rendered_batch_size(self, n: int) -> int:
        """The batch `n` samples are rendered in: what a row records so the image can be re-rendered."""
        return self.batch_size if self.pad_batches else n

    def scheduler_info(self, sampler: str) -> dict[str, Any]:
        return scheduler_description(self._scheduler(sampler))

    def _scheduler(self, sampler: str):
        if sampler not in self._schedulers:
            scheduler = make_scheduler(sampler, self._base_scheduler_config)
            self._schedulers[sampler] = clone_model_output(scheduler) if self.cuda_graphs else scheduler
        return self._schedulers[sampler]

    # -- LoRA ---------------------------------------------------------------------------------------
    def set_loras(self, loras: Sequence[LoraSpec]) -> list[dict[str, Any]]:
        """Activate exactly these adapters at their scales; returns their provenance (name, path, scale, sha256).

        Fused (the default): the adapters are loaded, fused into the base weights (W0 + scale * dW) and
        their peft layers removed again, so the UNet keeps the module tree it had; a compiled UNet keeps its
        graph (the weights are graph inputs, changed in place). The touched base weights are saved first
        and copied back exactly when the adapters change. Unfused: peft adapter layers stay active.
        """
        wanted = tuple((self._lora_name(spec), float(spec.scale)) for spec in loras)
        if wanted == self._active:
            return [dict(self._loaded_loras[n], scale=s) for n, s in wanted]
        if self._fused:
            self._restore_base_weights()  # exact, unlike subtracting the delta again
            self._fused = False
        names = [n for n, _ in wanted]
        scales = [s for _, s in wanted]
        if wanted and self.fuse_lora:
            for spec, name in zip(loras, names, strict=True):
                self._load_lora(spec, name)
            self.pipe.set_adapters(names, adapter_weights=scales)
            self._snapshot_base_weights()
            self.pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
            self.pipe.unload_lora_weights()  # keeps the fused weights, drops the adapter layers
            self._fused = True
        elif wanted:
            for spec, name in zip(loras, names, strict=True):
                self._load_lora(spec, name)
            self.pipe.enable_lora()
            self.pipe.set_adapters(names, adapter_weights=scales)
        elif self._peft_loaded:
            self.pipe.disable_lora()
        self._active = wanted
        return [dict(self._loaded_loras[n], scale=s) for n, s in wanted]

    def _lora_layers(self):
        """(key, base layer) of every peft LoRA layer now in the UNet and text encoder."""
        for part in ("unet", "text_encoder"):
            for name, layer in getattr(self.pipe, part).named_modules():
                if hasattr(layer, "lora_A") and hasattr(layer, "base_layer"):
                    yield f"{part}.{name}", layer.base_layer

    def _snapshot_base_weights(self) -> None:
        self._base_weights = {k: layer.weight.detach().clone() for k, layer in self._lora_layers()}

    def _restore_base_weights(self) -> None:
        """Copy the saved base weights back in place, into the layers at the same module paths."""
        import torch

        saved = getattr(self, "_base_weights", {})
        modules = {
            f"{part}.{name}": m
            for part in ("unet", "text_encoder")
            for name, m in getattr(self.pipe, part).named_modules()
        }
        with torch.no_grad():
            for k, weight in saved.items():
                layer = modules[k]
                layer = getattr(layer, "base_layer", layer)
                layer.weight.copy_(weight)
        self._base_weights = {}

    def _lora_name(self, spec: LoraSpec) -> str:
        """The adapter's name (file stem + sha256 prefix); records its provenance on first sight."""
        local = self._local_lora_path(spec)
        sha = sha256_file(local)
        name = f"{spec.name}_{sha[:8]}"
        if name not in self._loaded_loras:
            check_lora_file(local, allow_pickle=self.allow_pickle)
            self._loaded_loras[name] = {"name": name, "path": spec.path, "sha256": sha}
        return name

    @staticmethod
    def _local_lora_path(spec: LoraSpec) -> str:
        if is_s3(spec.path):
            from dermgen.store import download_to_cache

            return str(download_to_cache(spec.path))
        return spec.path

    def _load_lora(self, spec: LoraSpec, name: str) -> None:
        """Load the adapter into peft layers unless it is loaded already."""
        if name in self._peft_loaded:
            return
        try:
            self.pipe.load_lora_weights(self._local_lora_path(spec), adapter_name=name)
        except Exception as exc:
            raise ConfigError(
                f"--lora: {spec.path!r} is incompatible with the base model {self.identity.model_id!r}: {exc}"
            ) from exc

    @property
    def _peft_loaded(self) -> set[str]:
        """Adapter names now loaded in peft layers (none after fusing: those are unloaded)."""
        try:
            listed = self.pipe.get_list_adapters()
        except Exception:  # noqa: BLE001 - no peft layers at all
            return set()
        return {n for names in listed.values() for n in names}

    # -- rendering ------------------------------------------------------------------------------------
    def render(
        self,
        prompts: Sequence[str],
        negative_prompts: Sequence[str],
        seeds: Sequence[int],
        *,
        sampler: str,
        steps: int,
        cfg_scale: float,
        width: int,
        height: int,
    ) -> np.ndarray:
        """Render one homogeneous batch; returns uint8 images shaped [n, height, width, 3]."""
        return self.render_batch(
            prompts,
            negative_prompts,
            seeds,
            sampler=sampler,
            steps=steps,
            cfg_scale=cfg_scale,
            width=width,
            height=height,
        ).images

    def render_batch(
        self,
        prompts: Sequence[str],
        negative_prompts: Sequence[str],
        seeds: Sequence[int],
        *,
        sampler: str,
        steps: int,
        cfg_scale: float,
        width: int,
        height: int,
    ) -> RenderResult:
        """Render one homogeneous batch: uint8 images [n, height, width, 3] and which of them are finite.

        An image whose latents or decoded pixels hold NaN or inf (fp16 overflow) has arbitrary uint8
        values; `finite[i]` is False for it so the caller can mark it failed instead of keeping it.
        """
        import torch

        n = len(prompts)
        if not (n == len(negative_prompts) == len(seeds)) or n == 0:
            raise ValueError("prompts, negative_prompts and seeds must be non-empty and of equal length")
        if n > self.batch_size:
            raise ValueError(f"batch of {n} is larger than batch_size={self.batch_size}")
        pad = self.rendered_batch_size(n) - n
        prompts = list(prompts) + [prompts[-1]] * pad
        negative_prompts = list(negative_prompts) + [negative_prompts[-1]] * pad
        seeds = list(seeds) + [seeds[-1]] * pad
        # One generator per image, seeded by the sample: the same seed gives the same noise in any batch.
        # On the device (noise="device") no noise crosses from the host during denoising (Euler a draws
        # fresh noise at every step); the pixels then depend on the device type, as recorded in each row.
        gen_device = "cpu" if self.noise == "cpu" else self.device
        generators = [torch.Generator(device=gen_device).manual_seed(int(s)) for s in seeds]
        self.pipe.scheduler = self._scheduler(sampler)
        extra: dict[str, Any] = {}
        if self.cuda_graphs:
            # Each denoising step starts a new CUDA-graph step, so the previous step's UNet output (still
            # referenced by the pipeline's loop variables) may be overwritten by the next replay.
            torch.compiler.cudagraph_mark_step_begin()
            extra["callback_on_step_end"] = _mark_cudagraph_step
        with torch.inference_mode():
            latents = self.pipe(
                prompt=prompts,
                negative_prompt=negative_prompts if any(negative_prompts) else None,
                num_inference_steps=int(steps),
                guidance_scale=float(cfg_scale),
                width=int(width),
                height=int(height),
                generator=generators,
                output_type="latent",
                **extra,
            ).images
            # What the pipeline does for output_type="pt" (no safety checker), with a finiteness check
            # between decoding and the clamp that would hide inf.
            vae = self.pipe.vae
            decoded = vae.decode(
                latents / vae.config.scaling_factor, return_dict=False, generator=generators
            )[0]
            finite = torch.isfinite(latents[:n]).flatten(1).all(1) & torch.isfinite(decoded[:n]).flatten(
                1
            ).all(1)
            out = self.pipe.image_processor.postprocess(
                decoded, output_type="pt", do_denormalize=[True] * decoded.shape[0]
            )
            images = (out[:n].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
            return RenderResult(images.contiguous().cpu().numpy(), finite.cpu().numpy())

    @property
    def noise_source(self) -> str:
        """Where the initial and per-step noise is drawn: 'cpu', or the device type ('cuda')."""
        return "cpu" if self.noise == "cpu" else self.device.split(":")[0]


@dataclass
class RenderResult:
    images: np.ndarray  # uint8 [n, height, width, 3]
    finite: np.ndarray  # bool [n]: False where the latents or decoded pixels held NaN or inf


def clone_model_output(scheduler):
    """Make `scheduler.step` work on a copy of the UNet output it is given.

    With CUDA graphs the UNet output lives in the graph's memory pool and the next replay overwrites it.
    Without guidance (CFG <= 1) it reaches the scheduler as is, and multistep schedulers keep it (PLMS's
    `ets` history), so it must be copied first. The signature is kept (the pipeline inspects it).
    """
    step = scheduler.step

    @functools.wraps(step)
    def step_on_a_copy(model_output, *args, **kwargs):
        return step(model_output.clone(), *args, **kwargs)

    scheduler.step = step_on_a_copy
    return scheduler


def check_lora_file(path: str, *, allow_pickle: bool = False) -> None:
    """Refuse missing or pickled adapter files before loading them."""
    if is_s3(path):
        return
    p = Path(path)
    if p.is_dir():
        if not any(p.glob("*.safetensors")):
            raise ConfigError(f"--lora: folder {path!r} holds no .safetensors adapter")
        return
    if not p.exists():
        raise ConfigError(f"--lora: {path!r} does not exist; expected a .safetensors LoRA file")
    check_suffix(path, "--lora", allow_pickle)


def check_lora_compatible(lora_path: str, model: str) -> None:
    """Refuse a LoRA whose adapted layers do not exist in the base UNet or have other shapes.

    Reads only the adapter's safetensors header and builds the UNet on the meta device (no weights),
    so a mismatch costs milliseconds instead of a failed GPU job. Adapters in other key layouts
    (e.g. kohya `lora_unet_*`) are checked when loaded.
    """
    if is_s3(lora_path):
        return
    p = Path(lora_path)
    files = sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
    if not files or not files[0].suffix == ".safetensors":
        return
    from safetensors import safe_open

    try:
        with safe_open(str(files[0]), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - not a readable safetensors file
        raise ConfigError(f"--lora: {lora_path!r} is not a readable safetensors file ({exc})") from None
    unet_keys = {k[len("unet.") :]: v for k, v in shapes.items() if k.startswith("unet.") and ".lora_" in k}
    if not unet_keys:
        if not any(k.startswith(("unet.", "text_encoder.", "lora_unet_", "lora_te_")) for k in shapes):
            raise ConfigError(
                f"--lora: {lora_path!r} holds no LoRA weights (no unet.* or lora_unet_* tensors)"
            )
        return
    config = unet_config_for(model)
    if config is None:
        return
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    modules = dict(unet.named_modules())
    problems = []
    for key, shape in sorted(unet_keys.items()):
        name, _, rest = key.partition(".lora_")
        layer = modules.get(name)
        if layer is None:
            problems.append(f"{name}: no such layer in the base model")
            continue
        w = getattr(layer, "weight", None)
        if w is None or len(shape) < 2:
            continue
        if rest.startswith("A.") and shape[1] != w.shape[1]:
            problems.append(f"{name}: adapter input size {shape[1]}, base layer {w.shape[1]}")
        elif rest.startswith("B.") and shape[0] != w.shape[0]:
            problems.append(f"{name}: adapter output size {shape[0]}, base layer {w.shape[0]}")
    if problems:
        raise ConfigError(
            f"--lora: {lora_path!r} is incompatible with the base model {model!r}: {len(problems)} of "
            f"{len(unet_keys)} adapter tensors do not fit (first: {problems[0]})"
        )
