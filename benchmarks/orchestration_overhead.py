"""Orchestration overhead: the same samples rendered by a plain diffusers loop vs dermgen's Ray runner.

Each side runs the way a user runs it, as a fresh Python process timed from start to exit:

  plain:   `python <this script> --child-plain ...`: import torch + diffusers, build the tiny pipeline,
           render every planned sample in a loop (same prompts, seeds, samplers, steps, batch size), exit;
  dermgen: `python jobs/generate_6k.py --ray-address ADDR ...`: connect to the running Ray, start one
           generator actor (a new process: imports, model load), render, score every image with the
           default filter, encode PNGs, commit Parquet shards, write the summary, exit.

With --cap-factor 1 both sides render exactly the same samples (the random-weight tiny model's images are
noise that the filter drops, and top-ups would add work). Ray is started and settled before timing (a
cluster is already up when a job is submitted). Both sides get the whole machine: the plain loop uses all
torch threads; the actor reserves all CPUs. The JSON also gives the plain loop's time without its
process start-up and imports (`plain_loop_only_s`) and dermgen's ratio against that stricter baseline.

    python benchmarks/orchestration_overhead.py            # 2 repeats per side, ~4 min on a 2-core machine
    python benchmarks/orchestration_overhead.py --quick    # CI smoke

Prints JSON as its last line: plain_s, dermgen_s, ratio (target <= 1.10 on a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MANIFEST = REPO / "manifests" / "derm_t2im_6k.yaml"


def plain_loop(plan, batch_size: int) -> float:
    """Render every planned sample with a bare diffusers loop (same prompts, seeds, samplers, steps)."""
    import torch

    from dermgen.models import quiet_hf_logging
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


def child_plain(args) -> None:
    """The plain side's process: plan (cheap), then the bare loop; prints the loop's own seconds."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    print(json.dumps({"loop_s": plain_loop(make_plan(args), args.batch_size)}))


def make_plan(args):
    from dermgen.config import make_config
    from dermgen.manifest import load_manifest
    from dermgen.run import plan_for

    cfg = make_config(manifest=str(MANIFEST), model="tiny", limit=args.images, size=args.size,
                      shard_size=args.shard_size, batch_size=args.batch_size)  # fmt: skip
    return plan_for(cfg, load_manifest(cfg.resolved_manifest()))


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return secs, proc.stdout


def start_ray(cpus: int) -> str:
    """A local Ray head whose pre-started workers have finished booting; returns its address."""
    import ray

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)

    @ray.remote(num_cpus=1)
    def ready() -> int:
        return os.getpid()

    ray.get([ready.remote() for _ in range(cpus)])
    time.sleep(2.0)  # let the idle worker pool finish starting
    return ray.get_runtime_context().gcs_address


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=384)
    ap.add_argument("--size", type=int, default=72)  # ~100 ms per image on one core pair
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--filter", default="default", choices=["default", "none"])
    ap.add_argument("--repeats", type=int, default=2, help="runs of each side, in alternating order")
    ap.add_argument("--quick", action="store_true", help="tiny workload for CI (the ratio is not meaningful)")
    ap.add_argument("--child-plain", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.images, args.size, args.shard_size, args.repeats = 16, 64, 8, 1
    if args.child_plain:
        return child_plain(args)

    cpus = os.cpu_count() or 1
    out = Path(tempfile.mkdtemp(prefix="dermgen-bench-"))
    address = start_ray(cpus)
    common = ["--images", str(args.images), "--size", str(args.size)]
    common += ["--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size)]
    plain_cmd = [sys.executable, str(Path(__file__).resolve()), "--child-plain", *common]
    dermgen_cmd = [
        sys.executable, str(REPO / "jobs" / "generate_6k.py"), "--manifest", str(MANIFEST), "--model", "tiny",
        "--limit", str(args.images), "--size", str(args.size), "--filter", args.filter,
        "--output", str(out / "run"), "--num-actors", "1", "--cpus-per-actor", str(cpus), "--cap-factor", "1",
        "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size),
        "--ray-address", address, "--progress-interval", "30",
    ]  # fmt: skip
    env = dict(os.environ, DERMGEN_ACTOR_STAGGER_S="0")

    # Alternate the order over repeats: on a shared VM the CPU speed drifts during a run, and whichever
    # side runs second would otherwise carry the drift.
    plain_times, loop_times, dermgen_times, loads = [], [], [], []
    summary: dict = {}
    try:
        for rep in range(args.repeats):
            for side in ("plain", "dermgen") if rep % 2 == 0 else ("dermgen", "plain"):
                if side == "plain":
                    secs, stdout = timed(plain_cmd)
                    plain_times.append(secs)
                    loop_times.append(json.loads(stdout.strip().splitlines()[-1])["loop_s"])
                else:
                    shutil.rmtree(out / "run", ignore_errors=True)
                    secs, _ = timed(dermgen_cmd, env)
                    dermgen_times.append(secs)
                    from dermgen.rundir import RunDir

                    summary = RunDir(out / "run").summary()
                    loads.extend(a["load_seconds"] for a in summary["actors"].values())
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(out, ignore_errors=True)
    plain_s, dermgen_s, loop_s = sum(plain_times), sum(dermgen_times), sum(loop_times)
    planned = args.images
    generated = summary["generated"]
    result = {
        "benchmark": "orchestration_overhead",
        "images_planned": planned,
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
        "ratio": round(dermgen_s / plain_s, 4),
        "ratio_of_medians": round(statistics.median(dermgen_times) / statistics.median(plain_times), 4),
        "plain_loop_only_s": round(loop_s, 3),
        "ratio_vs_loop_only": round(dermgen_s / loop_s, 4),
        "plain_ms_per_image": round(1000 * loop_s / planned / args.repeats, 2),
        "actor_load_s": [round(x, 2) for x in loads],
        "ratio_per_rendered_image": round((dermgen_s / generated) / (plain_s / planned), 4),
        "quick": args.quick,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
