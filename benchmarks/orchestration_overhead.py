"""Orchestration overhead: the same samples rendered by a plain diffusers loop vs dermgen's Ray runner.

The runner path includes everything a real run does: an actor starting and loading the model, the
default filter scoring every image (with --cap-factor 1, so both sides render exactly the same samples:
the random-weight tiny model's images are noise that the filter drops, and top-ups would add work), PNG encoding, Parquet commits, resume bookkeeping and the summary.
Ray itself is started before timing (a cluster is already up when a job is submitted). Both sides get
the whole machine: the plain loop uses all torch threads; the actor reserves all CPUs.

    python benchmarks/orchestration_overhead.py            # ~2 x 1 min on a 2-core machine
    python benchmarks/orchestration_overhead.py --quick    # CI smoke

Prints JSON as its last line: plain_s, dermgen_s, ratio (target <= 1.10 on a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def plain_loop(plan, batch_size: int) -> float:
    """Render every planned sample with a bare diffusers loop (same prompts, seeds, samplers, steps)."""
    import torch

    from dermgen.pipeline import quiet_hf_logging
    from dermgen.plan import batches
    from dermgen.samplers import make_scheduler
    from dermgen.tiny import build_tiny_pipeline

    quiet_hf_logging()
    t0 = time.perf_counter()
    pipe = build_tiny_pipeline()
    base = dict(pipe.scheduler.config)
    schedulers = {}
    n = 0
    for shard in plan.shards:
        for batch in batches(shard, batch_size):
            s0 = batch[0]
            if s0.sampler not in schedulers:
                schedulers[s0.sampler] = make_scheduler(s0.sampler, base)
            pipe.scheduler = schedulers[s0.sampler]
            with torch.inference_mode():
                images = pipe(
                    prompt=[s.prompt for s in batch],
                    num_inference_steps=s0.steps,
                    guidance_scale=s0.cfg_scale,
                    width=s0.width,
                    height=s0.height,
                    generator=[torch.Generator().manual_seed(s.seed) for s in batch],
                    output_type="np",
                ).images
            n += len(images)
    assert n == sum(len(s) for s in plan.shards)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=384)
    ap.add_argument("--size", type=int, default=72)  # ~100 ms per image on one core pair
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--filter", default="default", choices=["default", "none"])
    ap.add_argument("--repeats", type=int, default=2, help="runs of each side, in alternating order")
    ap.add_argument("--quick", action="store_true", help="tiny workload for CI (the ratio is not meaningful)")
    args = ap.parse_args()
    if args.quick:
        args.images, args.size, args.shard_size, args.repeats = 16, 64, 8, 1

    import ray
    import torch

    from dermgen.config import make_config
    from dermgen.manifest import load_manifest
    from dermgen.run import plan_for
    from dermgen.runner import generate

    cpus = os.cpu_count() or 1
    out = Path(tempfile.mkdtemp(prefix="dermgen-bench-"))
    cfg = make_config(
        manifest=str(REPO / "manifests" / "derm_t2im_6k.yaml"),
        model="tiny",
        limit=args.images,
        size=args.size,
        filter=args.filter,
        output=str(out / "run"),
        num_actors=1,
        cap_factor=1.0,
        cpus_per_actor=cpus,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        progress_interval=30,
    )
    plan = plan_for(cfg, load_manifest(cfg.resolved_manifest()))
    torch.set_num_threads(cpus)

    def run_dermgen() -> tuple[float, dict]:
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        os.environ["DERMGEN_ACTOR_STAGGER_S"] = "0"
        t0 = time.perf_counter()
        summary = generate(cfg)
        secs = time.perf_counter() - t0
        ray.shutdown()
        return secs, summary

    # Alternate the order over repeats: on a shared VM the CPU speed drifts during a run, and whichever
    # side runs second would otherwise carry the drift.
    plain_times, dermgen_times = [], []
    summary: dict = {}
    for rep in range(args.repeats):
        for side in ("plain", "dermgen") if rep % 2 == 0 else ("dermgen", "plain"):
            if side == "plain":
                plain_times.append(plain_loop(plan, args.batch_size))
            else:
                shutil.rmtree(out / "run", ignore_errors=True)
                secs, summary = run_dermgen()
                dermgen_times.append(secs)
    plain_s, dermgen_s = sum(plain_times), sum(dermgen_times)
    shutil.rmtree(out, ignore_errors=True)
    generated = summary["generated"]
    result = {
        "benchmark": "orchestration_overhead",
        "images_planned": plan.total_target,
        "images_generated_dermgen": generated,
        "size": args.size,
        "filter": args.filter,
        "batch_size": args.batch_size,
        "cpus": cpus,
        "repeats": args.repeats,
        "plain_runs_s": [round(t, 3) for t in plain_times],
        "dermgen_runs_s": [round(t, 3) for t in dermgen_times],
        "plain_s": round(plain_s, 3),
        "dermgen_s": round(dermgen_s, 3),
        "plain_ms_per_image": round(1000 * plain_s / plan.total_target / args.repeats, 2),
        # dermgen renders extra samples when the filter drops images; compare per rendered image too
        "ratio": round(dermgen_s / plain_s, 4),
        "ratio_per_rendered_image": round((dermgen_s / generated) / (plain_s / plan.total_target), 4),
        "quick": args.quick,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
