"""GPU throughput: plain diffusers vs dermgen's actor path, same process, same GPU.

A full-size SD 1.5 architecture (dermgen's packaged configs) with random weights: the same FLOPs as the
real Derm-T2IM model, no download. 512x512, 20 steps, Euler a, CFG 7.

  (a) plain diffusers, fp16, batch 1, output_type="pil", a Python loop;
  (b) dermgen's actor path: ShardWorker (fp16, SDPA, channels_last, fixed padded batch, uint8 on device,
      PNG encoding + default filter + Parquet commit on a background thread) writing a real shard store.

Also reports peak GPU memory and the GPU busy fraction (nvidia-smi sampled every 100 ms) of each phase.

    python benchmarks/gpu_throughput.py                    # ~5 min on one H100
    python benchmarks/gpu_throughput.py --images 64 --batch-size 16 --compile

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


def plain_diffusers(folder: Path, n: int, steps: int) -> dict:
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        folder, torch_dtype=torch.float16, safety_checker=None, requires_safety_checker=False
    ).to("cuda")
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe("benign mole", num_inference_steps=steps, guidance_scale=7.0)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with BusySampler() as busy:
        t0 = time.perf_counter()
        for i in range(n):
            pipe(
                "benign mole",
                num_inference_steps=steps,
                guidance_scale=7.0,
                generator=torch.Generator("cuda").manual_seed(i),
            )
        torch.cuda.synchronize()
        secs = time.perf_counter() - t0
    out = {
        "images": n,
        "seconds": round(secs, 3),
        "images_per_s": round(n / secs, 3),
        "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
        "gpu_busy": busy.busy_fraction,
    }
    del pipe
    torch.cuda.empty_cache()
    return out


def dermgen_path(folder: Path, n: int, steps: int, batch_size: int, compile: bool, work: Path) -> dict:
    import torch

    from dermgen.manifest import parse_manifest
    from dermgen.plan import plan_run
    from dermgen.worker import ShardWorker, WorkerOptions

    manifest = parse_manifest(
        {
            "name": "bench",
            "entries": [
                {
                    "id": "benign_mole",
                    "label": "benign",
                    "prompt": "benign mole",
                    "count": n,
                    "samplers": ["Euler a"],
                    "steps": steps,
                    "cfg_scale": 7,
                    "size": 512,
                }
            ],
        }
    )
    plan = plan_run(manifest, shard_size=max(batch_size * 4, 64))
    opts = WorkerOptions(
        model=str(folder),
        filter="default",
        batch_size=batch_size,
        device="cuda",
        compile=compile,
        warmup_size=(512, 512),
    )
    worker = ShardWorker(opts, str(work / "store"), run_id="bench", actor="bench")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with BusySampler() as busy:
        t0 = time.perf_counter()
        kept = 0
        for shard in plan.shards:
            kept += worker.run_shard(shard)["kept"]
        torch.cuda.synchronize()
        secs = time.perf_counter() - t0
    worker.close()
    return {
        "images": n,
        "seconds": round(secs, 3),
        "images_per_s": round(n / secs, 3),
        "batch_size": batch_size,
        "compile": compile,
        "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
        "gpu_busy": busy.busy_fraction,
        "load_s": round(worker.load_seconds, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--plain-images", type=int, default=24)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"benchmark": "gpu_throughput", "skipped": "no CUDA device"}))
        return
    work = Path(tempfile.mkdtemp(prefix="dermgen-gpu-"))
    try:
        t0 = time.perf_counter()
        build_random_sd15(work / "sd15-random")
        build_s = time.perf_counter() - t0
        plain = plain_diffusers(work / "sd15-random", args.plain_images, args.steps)
        ours = dermgen_path(
            work / "sd15-random", args.images, args.steps, args.batch_size, args.compile, work
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "gpu_throughput",
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "size": 512,
        "steps": args.steps,
        "sampler": "Euler a",
        "cfg": 7.0,
        "build_s": round(build_s, 1),
        "plain_diffusers_fp16_batch1": plain,
        "dermgen_actor_path": ours,
        "speedup": round(ours["images_per_s"] / plain["images_per_s"], 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
