"""GPU throughput: plain diffusers vs dermgen's actor path, same process, same GPU.

A full-size SD 1.5 architecture (dermgen's packaged configs) with random weights: the same FLOPs as the
real Derm-T2IM model, no download. 512x512, 20 steps, Euler a, CFG 7.

  (a) plain diffusers, fp16, batch 1, output_type="pil", a Python loop;
  (b) dermgen's actor path: ShardWorker (fp16, SDPA, channels_last, fixed batch, uint8 on device, PNG
      encoding + default filter on a background thread, two shard calls at once so a shard's Parquet commit
      overlaps the next shard's rendering) writing a real shard store.

Also reports peak GPU memory and the GPU busy fraction (nvidia-smi sampled every 100 ms) of each phase,
and how far the optimised path's pixels are from the unoptimised one (same seeds and batch, fp16,
channels-first, eager): max and mean absolute difference in uint8 levels.

    python benchmarks/gpu_throughput.py                    # ~5 min on one H100
    python benchmarks/gpu_throughput.py --images 64 --batch-size 16 --compile
    python benchmarks/gpu_throughput.py --images 64 --batch-size 16 --cuda-graphs

Prints JSON as its last line. Needs CUDA; without it prints {"skipped": ...} and exits 0.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


class BusySampler:
    """Samples nvidia-smi GPU utilisation in the background."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"]
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        except OSError:
            return
        while not self._stop.is_set():
            line = proc.stdout.readline()
            if not line:
                break
            try:
                self.samples.append(float(line.strip().split(",")[0]))
            except ValueError:
                pass
        proc.terminate()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def busy_fraction(self) -> float | None:
        return round(sum(self.samples) / (100 * len(self.samples)), 4) if self.samples else None


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 1e9, 2) if device == "cuda" else None


def build_tiny(folder: Path) -> None:
    """The tiny preset as a diffusers folder (for --cpu-smoke: the same code path on a CPU, in seconds)."""
    from dermgen.tiny import build_tiny_pipeline

    build_tiny_pipeline().save_pretrained(folder)


def build_random_sd15(folder: Path) -> None:
    """Save a random-weight SD 1.5 pipeline (fp16) as a diffusers folder dermgen can load."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    cfg = REPO / "dermgen" / "configs" / "sd15"
    with torch.device("cuda"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder"))
    pipe = StableDiffusionPipeline(
        unet=unet.half(),
        vae=vae.half(),
        text_encoder=text_encoder.half(),
        tokenizer=CLIPTokenizer.from_pretrained(cfg / "tokenizer"),
        scheduler=PNDMScheduler.from_config(PNDMScheduler.load_config(cfg / "scheduler")),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)


def plain_diffusers(folder: Path, n: int, steps: int, device: str, size: int) -> dict:
    """(a) what most scripts do: fp16 pipeline, one image per call, PIL output."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    dtype = torch.float16 if device == "cuda" else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(
        folder, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False
    ).to(device)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    kw = {"num_inference_steps": steps, "guidance_scale": 7.0, "width": size, "height": size}
    pipe("benign mole", **kw)  # warm-up
    _sync(device)
    _reset_peak(device)
    with BusySampler() as busy:
        t0 = time.perf_counter()
        for i in range(n):
            pipe("benign mole", generator=torch.Generator(device).manual_seed(i), **kw)
        _sync(device)
        secs = time.perf_counter() - t0
    out = {
        "images": n,
        "seconds": round(secs, 3),
        "images_per_s": round(n / secs, 3),
        "peak_mem_gb": _peak_gb(device),
        "gpu_busy": busy.busy_fraction,
    }
    del pipe
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def dermgen_path(
    folder: Path,
    n: int,
    steps: int,
    batch_size: int,
    compile: bool,
    cuda_graphs: bool,
    work: Path,
    device: str,
    size: int,
):
    """(b) dermgen's actor path: a ShardWorker rendering planned shards into a real store.

    Returns the figures and the worker's (warm) renderer for the equivalence check."""
    from dermgen.manifest import parse_manifest
    from dermgen.plan import plan_run
    from dermgen.worker import ShardWorker, WorkerOptions

    entry = {
        "id": "benign_mole",
        "label": "benign",
        "prompt": "benign mole",
        "count": n,
        "samplers": ["Euler a"],
        "steps": steps,
        "cfg_scale": 7,
        "size": size,
    }
    plan = plan_run(parse_manifest({"name": "bench", "entries": [entry]}), shard_size=max(batch_size * 4, 64))
    opts = WorkerOptions(
        model=str(folder),
        filter="default",
        batch_size=batch_size,
        device=device,
        compile=compile or cuda_graphs,
        cuda_graphs=cuda_graphs,
        warmup_size=(size, size),
    )
    worker = ShardWorker(opts, str(work / "store"), run_id="bench", actor="bench")
    _sync(device)
    _reset_peak(device)
    with BusySampler() as busy:
        t0 = time.perf_counter()
        # as a GPU actor does: two shard calls at once, so a shard commits while the next one renders
        with ThreadPoolExecutor(max_workers=2) as calls:
            rendered = sum(r["ok"] for r in calls.map(worker.run_shard, plan.shards))
        _sync(device)
        secs = time.perf_counter() - t0
    worker.close()
    assert rendered == n, f"rendered {rendered} of {n}"
    return worker.renderer, {
        "images": n,
        "seconds": round(secs, 3),
        "images_per_s": round(n / secs, 3),
        "batch_size": batch_size,
        "compile": compile or cuda_graphs,
        "cuda_graphs": cuda_graphs,
        "peak_mem_gb": _peak_gb(device),
        "gpu_busy": busy.busy_fraction,
        "load_s": round(worker.load_seconds, 1),
        "shards_committed": sum(1 for p in (work / "store" / "shards").glob("*.parquet")),
    }


def equivalence(fast, folder: Path, steps: int, device: str, size: int) -> dict:
    """Pixels of the optimised renderer vs an unoptimised one (eager, channels-first), same seeds and batch."""
    from dermgen.pipeline import Renderer

    n = fast.batch_size
    plain = Renderer(str(folder), device=device, batch_size=n, channels_last=False)
    kw = {"sampler": "Euler a", "steps": steps, "cfg_scale": 7.0, "width": size, "height": size}
    seeds = list(range(1000, 1000 + n))
    a = plain.render(["benign mole"] * n, [""] * n, seeds, **kw).astype("int16")
    b = fast.render(["benign mole"] * n, [""] * n, seeds, **kw).astype("int16")
    diff = abs(a - b)
    return {
        "images": n,
        "max_abs_diff_levels": int(diff.max()),
        "mean_abs_diff_levels": round(float(diff.mean()), 4),
        "fraction_of_values_off_by_more_than_1": round(float((diff > 1).mean()), 6),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--plain-images", type=int, default=24)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--cuda-graphs", action="store_true", help="compile with CUDA graphs (implies --compile)")
    ap.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="the same code on the CPU with the tiny model at 64 px (checks the script, not a GPU)",
    )
    args = ap.parse_args()
    import torch

    if args.cpu_smoke:
        device, size, build = "cpu", 64, build_tiny
        args.images, args.plain_images, args.steps, args.batch_size = 8, 2, 4, 4
    elif torch.cuda.is_available():
        device, size, build = "cuda", 512, build_random_sd15
    else:
        print(json.dumps({"benchmark": "gpu_throughput", "skipped": "no CUDA device"}))
        return
    work = Path(tempfile.mkdtemp(prefix="dermgen-gpu-"))
    try:
        t0 = time.perf_counter()
        build(work / "model")
        build_s = time.perf_counter() - t0
        plain = plain_diffusers(work / "model", args.plain_images, args.steps, device, size)
        fast, ours = dermgen_path(
            work / "model",
            args.images,
            args.steps,
            args.batch_size,
            args.compile,
            args.cuda_graphs,
            work,
            device,
            size,
        )
        same = equivalence(fast, work / "model", args.steps, device, size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "gpu_throughput",
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (--cpu-smoke)",
        "torch": torch.__version__,
        "size": size,
        "steps": args.steps,
        "sampler": "Euler a",
        "cfg": 7.0,
        "build_s": round(build_s, 1),
        "plain_diffusers_fp16_batch1": plain,
        "dermgen_actor_path": ours,
        "speedup": round(ours["images_per_s"] / plain["images_per_s"], 3),
        "optimised_vs_unoptimised_pixels": same,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
