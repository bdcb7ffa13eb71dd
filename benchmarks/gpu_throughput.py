"""GPU throughput: plain diffusers vs dermgen's actor path, same process, same GPU.

A full-size SD 1.5 architecture (dermgen's packaged configs) with random weights: the same FLOPs as the
real Derm-T2IM model, no download. 512x512, 20 steps, Euler a, CFG 7.

  (a)  plain diffusers, fp16, batch 1, output_type="pil", a Python loop (what most scripts do);
  (a') plain diffusers, fp16, at dermgen's batch size, one device generator per image (the fair baseline:
       batching alone is not dermgen's merit);
  (b)  dermgen's actor path: ShardWorker (fp16, SDPA, channels_last, fixed batch, device noise, uint8 on
       device, PNG encoding + default filter on a background thread, two shard calls at once so a shard's
       Parquet commit overlaps the next shard's rendering) writing a real shard store.

Reported: (b)/(a) and (b)/(a'); (b) with channels_last off; (b) with --compile (unless --no-compile) and its
compile time (worker start with warm-up, minus the eager worker's start); peak GPU memory and the GPU busy
fraction (nvidia-smi every 100 ms) of each phase; and how far the optimised path's pixels are from an
unoptimised renderer (same seeds and batch, fp16, channels-first, eager), in uint8 levels.

    python benchmarks/gpu_throughput.py                    # ~6-8 min on one H100 (compile included)
    python benchmarks/gpu_throughput.py --no-compile       # eager phases only, ~3 min
    python benchmarks/gpu_throughput.py --cuda-graphs      # the compiled phase with CUDA graphs
    python benchmarks/gpu_throughput.py --cpu-smoke        # the same code on the CPU, tiny model, no compile

Targets: (b) >= 2x (a), (b) >= 1.2x (a'), (b) >= 10 images/s on an H100.
Prints JSON as its last line. Needs CUDA; without it (and without --cpu-smoke) prints {"skipped": ...}.
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
try:  # an installed dermgen (the device recipe's wheel) wins; else the checkout this script is in
    import dermgen  # noqa: F401
except ImportError:
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


def _channels_last():
    import torch

    return torch.channels_last


def _release() -> None:
    """Free the previous phase's GPU memory (its renderer must be unreferenced by now)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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


def plain_diffusers(folder: Path, n: int, steps: int, device: str, size: int, batch: int = 1) -> dict:
    """(a) fp16 pipeline, one image per call, PIL output; (a') the same at `batch` images per call with one
    device generator per image."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    dtype = torch.float16 if device == "cuda" else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(
        folder, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False
    ).to(device)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    kw = {"num_inference_steps": steps, "guidance_scale": 7.0, "width": size, "height": size}
    pipe(["benign mole"] * batch, **kw)  # warm-up
    _sync(device)
    _reset_peak(device)
    calls = -(-n // batch)
    with BusySampler() as busy:
        t0 = time.perf_counter()
        for c in range(calls):
            if batch == 1:
                gens = torch.Generator(device).manual_seed(c)
            else:
                gens = [torch.Generator(device).manual_seed(c * batch + i) for i in range(batch)]
            pipe(["benign mole"] * batch, generator=gens, **kw)
        _sync(device)
        secs = time.perf_counter() - t0
    images = calls * batch
    out = {
        "images": images,
        "batch_size": batch,
        "seconds": round(secs, 3),
        "images_per_s": round(images / secs, 3),
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
    channels_last: bool | None = None,
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
        warmup_samplers=("Euler a",),
        noise="device",  # plan v2, the default for new runs
        channels_last=channels_last,
    )
    store = work / f"store-{time.monotonic_ns()}"
    worker = ShardWorker(opts, str(store), run_id="bench", actor="bench")
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
        "channels_last": worker.renderer.pipe.unet.conv_in.weight.is_contiguous(
            memory_format=_channels_last()
        ),
        "noise": worker.renderer.noise_source,
        "shards_committed": sum(1 for p in (store / "shards").glob("*.parquet")),
    }


def equivalence(fast, folder: Path, steps: int, device: str, size: int) -> dict:
    """Pixels of the optimised renderer vs an unoptimised one (eager, channels-first), same seeds and batch."""
    from dermgen.pipeline import Renderer

    n = fast.batch_size
    plain = Renderer(str(folder), device=device, batch_size=n, channels_last=False, noise=fast.noise)
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
    ap.add_argument("--images", type=int, default=384)
    ap.add_argument("--plain-images", type=int, default=24)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled phase")
    ap.add_argument("--cuda-graphs", action="store_true", help="compiled phase with CUDA graphs")
    ap.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="the same code on the CPU with the tiny model at 64 px, no compiled phase (checks the script)",
    )
    args = ap.parse_args()
    import torch

    if args.cpu_smoke:
        device, size, build = "cpu", 64, build_tiny
        args.images, args.plain_images, args.steps, args.batch_size = 8, 2, 4, 4
        args.no_compile = True
        torch.set_num_threads(1)
    elif torch.cuda.is_available():
        device, size, build = "cuda", 512, build_random_sd15
    else:
        print(json.dumps({"benchmark": "gpu_throughput", "skipped": "no CUDA device"}))
        return
    work = Path(tempfile.mkdtemp(prefix="dermgen-gpu-"))
    model = work / "model"
    common = dict(steps=args.steps, device=device, size=size)
    try:
        t0 = time.perf_counter()
        build(model)
        build_s = time.perf_counter() - t0
        plain = plain_diffusers(model, args.plain_images, **common)
        plain_batched = plain_diffusers(model, args.images, batch=args.batch_size, **common)
        run = dict(n=args.images, batch_size=args.batch_size, cuda_graphs=False, work=work, **common)
        fast, ours = dermgen_path(model, compile=False, **run)
        same = equivalence(fast, model, args.steps, device, size)
        fast = None
        _release()
        _, ours_cf = dermgen_path(model, compile=False, channels_last=False, **run)
        _release()
        compiled = None
        if not args.no_compile:
            run["cuda_graphs"] = args.cuda_graphs
            _, compiled = dermgen_path(model, compile=True, **run)
            compiled["compile_s"] = round(compiled["load_s"] - ours["load_s"], 1)
            _release()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def ratio(a: dict | None, b: dict) -> float | None:
        return round(a["images_per_s"] / b["images_per_s"], 3) if a else None

    best = max((x for x in (ours, compiled) if x), key=lambda x: x["images_per_s"])
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
        "plain_diffusers_fp16_batched": plain_batched,
        "dermgen_actor_path": ours,
        "dermgen_channels_first": ours_cf,
        "dermgen_compiled": compiled,
        "speedup": ratio(ours, plain),  # (b)/(a), eager
        "speedup_vs_batched": ratio(ours, plain_batched),  # (b)/(a'), eager
        "compiled_speedup": ratio(compiled, plain),
        "compiled_speedup_vs_batched": ratio(compiled, plain_batched),
        "channels_last_gain": ratio(ours, ours_cf),  # > 1: channels_last is faster
        "compile_gain": ratio(compiled, ours),
        "targets": {
            "b_over_a_ge_2": ratio(best, plain) >= 2.0,
            "b_over_a_prime_ge_1.2": ratio(best, plain_batched) >= 1.2,
            "b_ge_10_images_per_s": best["images_per_s"] >= 10.0,
        },
        "optimised_vs_unoptimised_pixels": same,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
