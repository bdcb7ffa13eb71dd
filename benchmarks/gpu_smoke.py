"""GPU smoke: every GPU-only path of dermgen once, briefly, one JSON line per check.

Checks (each prints {"check", "ok", "seconds", ...}; "ok": null with a "skipped" reason where it cannot run):

  fp16_eager        render a batch in fp16 (channels_last, SDPA); finite, not blank
  device_noise      noise drawn on the device: the same seeds re-render bit-exactly, no host noise
  bf16              render a batch in bf16; finite
  lora_fused        a LoRA at 0.7 changes the pixels; scale 0 == base within 1 level; set_loras([]) == base
  compile           compiled UNet vs eager within the tolerance; LoRA on the compiled UNet vs eager fused
  recompiles        warm-up with Euler / Euler a / PLMS, then a shard using all three: no recompiles
  cuda_graphs       CUDA graphs with every sampler (and PLMS at CFG 1) vs eager within the tolerance
  post_overlap      ShardWorker on the device: PNG + filter on a background thread, two shard calls at once
  nan_guard         a NaN injected into a decode gives a `failed` row with a reason, not pixels
  train_8bit        one LoRA training step with 8-bit AdamW (bitsandbytes), else torch AdamW on the CPU

On a GPU the model is a random-weight SD 1.5 (dermgen's packaged configs, the real FLOPs) at 256 px and
4 steps. Compiled checks use torch.compile's "default" mode and "reduce-overhead" (CUDA graphs) unless
--autotune asks for dermgen's own max-autotune modes (minutes of autotuning; gpu_throughput.py times those).
Designed for < 6 minutes on one H100.

    python benchmarks/gpu_smoke.py                 # on the GPU machine
    python benchmarks/gpu_smoke.py --cpu-smoke     # the same code, tiny model, CPU (CUDA-only checks skipped)

The last line is a summary JSON object; the exit status is 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
try:  # an installed dermgen (the device recipe's wheel) wins; else the checkout this script is in
    import dermgen  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Stated tolerances, in uint8 levels (0-255), fixed before any GPU run.
TOL_FP32 = {"max": 1, "mean": 0.05}  # compiled vs eager, fp32 (the CPU)
TOL_HALF = {"max": 8, "mean": 0.5}  # compiled / CUDA graphs vs eager, fp16 (kernels reorder sums)
TOL_LORA_ZERO = 1  # LoRA at scale 0 vs the base model, max levels (fused weights are W0 + 0 * dW)
SAMPLERS = ("Euler", "Euler a", "PLMS", "DDIM", "DPM++ 2M Karras")


class Smoke:
    """Runs checks, printing one JSON line each; a check returns a dict of figures with "ok"."""

    def __init__(self, args, device: str, size: int, steps: int, model: str) -> None:
        self.args, self.device, self.size, self.steps, self.model = args, device, size, steps, model
        self.results: list[dict] = []

    @property
    def on_gpu(self) -> bool:
        return self.device == "cuda"

    def run(self, name: str, fn, *, cuda_only: str | None = None) -> dict:
        t0 = time.perf_counter()
        if cuda_only and not self.on_gpu:
            res = {"ok": None, "skipped": cuda_only}
        else:
            try:
                res = fn()
            except Exception as exc:  # noqa: BLE001 - a failed check is reported, the others still run
                res = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:800]}
                traceback.print_exc(file=sys.stderr)
        res = {"check": name, **res, "seconds": round(time.perf_counter() - t0, 2)}
        self.results.append(res)
        print(json.dumps(res, default=str), flush=True)
        return res

    # -- helpers ----------------------------------------------------------------------------------
    def renderer(self, **kw):
        from dermgen.pipeline import Renderer

        kw.setdefault("batch_size", 2)
        return Renderer(self.model, device=self.device, **kw)

    def render(self, r, sampler="Euler a", seeds=(11, 12), cfg=7.0):
        return r.render_batch(
            ["benign mole"] * len(seeds),
            [""] * len(seeds),
            list(seeds),
            sampler=sampler,
            steps=self.steps,
            cfg_scale=cfg,
            width=self.size,
            height=self.size,
        )

    @property
    def tol(self) -> dict:
        return TOL_HALF if self.on_gpu else TOL_FP32

    def diff(self, a, b) -> dict:
        d = abs(a.astype("int16") - b.astype("int16"))
        return {"max_levels": int(d.max()), "mean_levels": round(float(d.mean()), 4)}

    def within(self, d: dict, tol: dict) -> bool:
        return d["max_levels"] <= tol["max"] and d["mean_levels"] <= tol["mean"]

    @property
    def eager(self):
        """The eager fp16 renderer every compiled check compares against (made once, by whichever check
        asks first, so any subset of checks runs alone)."""
        if getattr(self, "_eager", None) is None:
            self._eager = self.renderer()
        return self._eager

    @property
    def lora(self):
        """A random LoRA file for the checks that fuse one."""
        if getattr(self, "_lora", None) is None:
            self._lora = make_random_lora(self.eager, self.work / "lora.safetensors")
        return self._lora

    def eager_reference(self, lora: bool = False):
        """Eager Euler a images of the two smoke seeds, without or with the LoRA at 0.7."""
        from dermgen.pipeline import LoraSpec

        cache = self.__dict__.setdefault("_eager_refs", {})
        if lora not in cache:
            r = self.eager
            if lora:
                r.set_loras([LoraSpec(self.lora, 0.7)])
            cache[lora] = self.render(r).images
            r.set_loras([])
        return cache[lora]

    # -- checks -----------------------------------------------------------------------------------
    def fp16_eager(self) -> dict:
        r = self.eager
        out = self.render(r)
        self.__dict__.setdefault("_eager_refs", {})[False] = out.images
        return {
            "ok": bool(out.finite.all() and out.images.std() > 2),
            "dtype": r.dtype_name,
            "finite": out.finite.tolist(),
            "std": round(float(out.images.std()), 2),
        }

    def device_noise(self) -> dict:
        r = self.renderer(noise="device")
        a, b = self.render(r).images, self.render(r).images
        return {
            "ok": bool((a == b).all()),
            "noise": r.noise_source,
            "bit_exact_rerender": bool((a == b).all()),
        }

    def bf16(self) -> dict:
        r = self.renderer(dtype="bf16")
        out = self.render(r)
        return {"ok": bool(out.finite.all()), "dtype": r.dtype_name, "finite": out.finite.tolist()}

    def lora_fused(self) -> dict:
        from dermgen.pipeline import LoraSpec

        r = self.eager
        base = self.render(r).images
        r.set_loras([LoraSpec(self.lora, 0.7)])
        with_lora = self.render(r).images
        self.__dict__.setdefault("_eager_refs", {})[True] = with_lora
        r.set_loras([LoraSpec(self.lora, 0.0)])
        zero = self.render(r).images
        r.set_loras([])
        after = self.render(r).images
        changed = self.diff(with_lora, base)
        zero_d = self.diff(zero, base)
        return {
            "ok": changed["mean_levels"] > 1.0
            and zero_d["max_levels"] <= TOL_LORA_ZERO
            and bool((after == base).all()),
            "lora_vs_base": changed,
            "scale0_vs_base": zero_d,
            "tolerance_scale0_max_levels": TOL_LORA_ZERO,
            "restored_exactly": bool((after == base).all()),
        }

    def compile(self) -> dict:
        from dermgen.pipeline import LoraSpec

        r = self.renderer(compile=True)
        t0 = time.perf_counter()
        base = self.render(r).images
        compile_s = time.perf_counter() - t0
        d = self.diff(base, self.eager_reference())
        r.set_loras([LoraSpec(self.lora, 0.7)])
        dl = self.diff(self.render(r).images, self.eager_reference(lora=True))
        r.set_loras([])
        restored = self.diff(self.render(r).images, base)
        return {
            "ok": self.within(d, self.tol) and self.within(dl, self.tol) and restored["max_levels"] == 0,
            "compile_s": round(compile_s, 1),
            "compiled_vs_eager": d,
            "compiled_lora_vs_eager_lora": dl,
            "restored_vs_base": restored,
            "tolerance": self.tol,
        }

    def recompiles(self) -> dict:
        from torch._dynamo.utils import counters

        from dermgen.manifest import parse_manifest
        from dermgen.plan import plan_run
        from dermgen.run import warmup_samplers
        from dermgen.worker import ShardWorker, WorkerOptions

        entry = {"id": "mole", "label": "benign", "prompt": "benign mole", "count": 12, "size": self.size}
        entry.update(steps=f"{self.steps}-{self.steps + 1}", samplers=["Euler", "Euler a", "PLMS"])
        manifest = parse_manifest({"name": "smoke", "entries": [entry]})
        plans = (plan_run(manifest, run_seed=seed, shard_size=12, block=2, version=2) for seed in range(100))
        plan = next(p for p in plans if len({s.sampler for s in p.shards[0].samples}) == 3)
        opts = WorkerOptions(
            model=self.model,
            filter="none",
            batch_size=2,
            device=self.device,
            compile=True,
            warmup_size=(self.size, self.size),
            warmup_samplers=warmup_samplers(plan),
            noise="device",
        )
        before = counters["stats"]["unique_graphs"]
        worker = ShardWorker(opts, str(self.work / "recompiles"), "smoke")
        warm = counters["stats"]["unique_graphs"]
        try:
            summary = worker.run_shard(plan.shards[0])
        finally:
            worker.close()
        after = counters["stats"]["unique_graphs"]
        return {
            "ok": summary["ok"] == 12 and after == warm,
            "graphs_compiled_in_warm_up": warm - before,
            "graphs_compiled_after_warm_up": after - warm,
            "warm_up_s": round(worker.load_seconds, 1),
        }

    def cuda_graphs(self) -> dict:
        r = self.renderer(cuda_graphs=True)
        per = {}
        ok = True
        for sampler, cfg in [(s, 7.0) for s in SAMPLERS] + [("PLMS", 1.0)]:
            out = self.render(r, sampler=sampler, cfg=cfg)
            again = self.render(r, sampler=sampler, cfg=cfg)  # replays of a captured graph
            ref = self.render(self.eager, sampler=sampler, cfg=cfg).images
            d = self.diff(out.images, ref)
            good = (
                bool(out.finite.all())
                and self.within(d, self.tol)
                and bool((again.images == out.images).all())
            )
            per[f"{sampler} cfg {cfg:g}"] = {**d, "ok": good}
            ok = ok and good
        return {"ok": ok, "samplers": per, "tolerance": self.tol}

    def post_overlap(self) -> dict:
        from concurrent.futures import ThreadPoolExecutor

        from dermgen.manifest import parse_manifest
        from dermgen.plan import plan_run
        from dermgen.worker import ShardWorker, WorkerOptions

        entry = {"id": "mole", "label": "benign", "prompt": "benign mole", "count": 8, "size": self.size}
        entry.update(steps=self.steps, samplers=["Euler a"])
        plan = plan_run(
            parse_manifest({"name": "smoke", "entries": [entry]}), shard_size=4, version=2, block=2
        )
        opts = WorkerOptions(
            model=self.model, filter="default", batch_size=2, device=self.device, noise="device"
        )
        worker = ShardWorker(opts, str(self.work / "overlap"), "smoke")
        try:
            with ThreadPoolExecutor(max_workers=2) as calls:
                results = list(calls.map(worker.run_shard, plan.shards))
        finally:
            worker.close()
        threaded = type(worker._post).__name__ == "ThreadPoolExecutor"
        return {
            "ok": all(r["committed"] and r["ok"] == 4 for r in results) and threaded == self.on_gpu,
            "post_processing": "background thread" if threaded else "inline (CPU device)",
            "shards": len(results),
            "images": sum(r["ok"] for r in results),
            "render_s": round(sum(r["gen_seconds"] for r in results), 2),
        }

    def nan_guard(self) -> dict:
        import pyarrow.parquet as pq

        from dermgen.manifest import parse_manifest
        from dermgen.plan import plan_run
        from dermgen.worker import ShardWorker, WorkerOptions

        entry = {"id": "mole", "label": "benign", "prompt": "benign mole", "count": 2, "size": self.size}
        entry.update(steps=self.steps, samplers=["Euler"])
        plan = plan_run(parse_manifest({"name": "smoke", "entries": [entry]}), shard_size=2)
        opts = WorkerOptions(model=self.model, filter="none", batch_size=2, device=self.device)
        store = self.work / "nan"
        worker = ShardWorker(opts, str(store), "smoke")
        decode = worker.renderer.pipe.vae.decode

        def poisoned(z, *a, **kw):
            out = decode(z, *a, **kw)
            out[0][1, 0, 0, 0] = float("nan")
            return out

        worker.renderer.pipe.vae.decode = poisoned
        try:
            worker.run_shard(plan.shards[0])
        finally:
            worker.close()
        rows = pq.read_table(store / "shards").to_pylist()
        statuses = [r["status"] for r in rows]
        return {"ok": statuses == ["ok", "failed"], "statuses": statuses, "error": rows[1]["error"]}

    def train_8bit(self) -> dict:
        import numpy as np
        import torch
        from PIL import Image

        from dermgen.train.lora import make_train_config, train_lora

        try:
            import bitsandbytes  # noqa: F401

            have_bnb = True
        except Exception:  # noqa: BLE001 - missing, or built without CUDA
            have_bnb = False
        data = self.work / "train-data"
        rng = np.random.default_rng(0)
        for label in ("benign", "malignant"):
            (data / label).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 255, (self.size, self.size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(data / label / f"{i}.png")
        optimizer = "adamw8bit" if have_bnb and self.on_gpu else "adamw"
        cfg = make_train_config(
            model=self.model,
            data=str(data),
            output=str(self.work / "train-out"),
            resolution=self.size,
            max_steps=1,
            batch_size=1,
            optimizer=optimizer,
            sample_steps=0,
            tensorboard=False,
            device=self.device,
        )
        result = train_lora(cfg)
        res = {
            "ok": result.steps == 1
            and result.final_loss is not None
            and bool(np.isfinite(result.final_loss)),
            "optimizer": optimizer,
            "loss": result.final_loss,
            "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if self.on_gpu else None,
        }
        if optimizer != "adamw8bit":
            res["note"] = "8-bit AdamW needs bitsandbytes and CUDA; ran torch AdamW"
            if self.on_gpu:
                res["ok"] = False  # on the GPU machine the 8-bit path is the point of this check
                res["error"] = "bitsandbytes is not importable (add its wheel to the device wheels)"
        return res


def make_random_lora(renderer, path: Path, rank: int = 4, seed: int = 0) -> str:
    """A random LoRA (diffusers/peft key layout) for the attention projections of `renderer`'s UNet."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, layer in renderer.pipe.unet.named_modules():
        if name.endswith(("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn2.to_q", "attn1.to_out.0")):
            out_f, in_f = layer.weight.shape
            tensors[f"unet.{name}.lora_A.weight"] = torch.randn(rank, in_f, generator=gen) / in_f**0.5
            tensors[f"unet.{name}.lora_B.weight"] = torch.randn(out_f, rank, generator=gen) * 0.5
    dtype = renderer.pipe.unet.dtype
    save_file({k: v.to(dtype).contiguous() for k, v in tensors.items()}, str(path))
    return str(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--cpu-smoke", action="store_true", help="tiny model on the CPU; CUDA-only checks skipped"
    )
    ap.add_argument("--autotune", action="store_true", help="compile with dermgen's max-autotune modes")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--skip", default="", help="comma-separated check names to leave out")
    args = ap.parse_args()
    import torch

    from dermgen import pipeline

    if args.cpu_smoke:
        device, size = "cpu", args.size or 64
        torch.set_num_threads(1)
    elif torch.cuda.is_available():
        device, size = "cuda", args.size or 256
    else:
        print(json.dumps({"benchmark": "gpu_smoke", "skipped": "no CUDA device (try --cpu-smoke)"}))
        return 0
    # Every check compiles its own UNet; all share one code object in torch's compile cache.
    torch._dynamo.config.cache_size_limit = 64
    if not args.autotune:  # the code paths of compile and CUDA graphs, without minutes of autotuning

        def quick_mode(on_gpu: bool, cuda_graphs: bool) -> str:
            return "reduce-overhead" if cuda_graphs else "default"

        pipeline.compile_mode = quick_mode
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dermgen-smoke-") as tmp:
        work = Path(tmp)
        if device == "cuda":
            from gpu_throughput import build_random_sd15

            build_random_sd15(work / "model")
            model = str(work / "model")
        else:
            model = "tiny"
        smoke = Smoke(args, device, size, args.steps, model)
        smoke.work = work
        skip = {s.strip() for s in args.skip.split(",") if s.strip()}
        checks = [
            ("fp16_eager", smoke.fp16_eager, None),
            ("device_noise", smoke.device_noise, None),
            ("bf16", smoke.bf16, None),
            ("lora_fused", smoke.lora_fused, None),
            ("compile", smoke.compile, None),
            ("recompiles", smoke.recompiles, None),
            ("cuda_graphs", smoke.cuda_graphs, "CUDA graphs need a CUDA device"),
            ("post_overlap", smoke.post_overlap, None),
            ("nan_guard", smoke.nan_guard, None),
            ("train_8bit", smoke.train_8bit, None),
        ]
        for name, fn, cuda_only in checks:
            if name in skip:
                smoke.results.append({"check": name, "ok": None, "skipped": "--skip"})
                continue
            smoke.run(name, fn, cuda_only=cuda_only)
    failed = [r["check"] for r in smoke.results if r["ok"] is False]
    summary = {
        "benchmark": "gpu_smoke",
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (--cpu-smoke)",
        "torch": torch.__version__,
        "dermgen": str(Path(pipeline.__file__).parent),
        "size": size,
        "steps": args.steps,
        "compile_modes": "dermgen (max-autotune)" if args.autotune else "default / reduce-overhead",
        "checks": len(smoke.results),
        "passed": [r["check"] for r in smoke.results if r["ok"] is True],
        "failed": failed,
        "skipped": {r["check"]: r["skipped"] for r in smoke.results if r["ok"] is None},
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
