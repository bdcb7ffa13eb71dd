"""Driver scale: the real runner (`dermgen.runner.generate`) feeding a pool of simulated actors on a local Ray.

The actors are real Ray actors holding a `SleepWorker` (a ShardWorker that derives the shard's samples,
as a real one does, then sleeps instead of rendering and commits nothing). They take no CPU (`num_cpus=0`)
and one unit of a custom `fake_gpu` resource each, the way GPU actors take one GPU. What is measured:

  idle_fraction     per actor, the share of its working span (first shard start to last shard end) spent
                    waiting for work, averaged: 0 means no actor ever waited while shards remained
  dispatch_ms       the driver process's CPU time (user+sys, Ray's client threads included) per shard
  max_shards_per_s  shards completed per second of wall time with `--sleep 0`: the rate the driver can
                    sustain; x the seconds a real GPU needs per shard = the GPUs one driver keeps fed
  rss_mb            the driver's RSS sampled through the run (start, middle, end, and the slope per 10k
                    shards): flat means the driver's memory does not grow with the run

    python benchmarks/driver_scale.py                       # 48 actors, 20k shards (~6 min on 2 cores)
    python benchmarks/driver_scale.py --actors 100 --shards 200000 --rate 62.5
    python benchmarks/driver_scale.py --quick               # CI smoke: 4 actors, 200 shards

`--rate R` sets each actor's sleep to actors / R seconds, so the driver must complete R shards/s: 62.5 is
what 500 GPUs need at 8 s per 64-image shard. `--sleep S` sets the sleep directly (0: as fast as it can).
Prints JSON as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from dermgen.worker import ShardWorker  # noqa: E402


def sleep_worker(seconds: float) -> type[ShardWorker]:
    """A ShardWorker subclass that sleeps `seconds` per shard (defined here, pickled by value to actors)."""

    class SleepWorker(ShardWorker):
        def __init__(self, opts, store, run_id, actor="local") -> None:  # no model, no store
            self.actor, self.node = actor, socket.gethostname()
            self._render_lock = threading.Lock()  # one shard "renders" at a time, as on a real GPU actor

        def info(self) -> dict[str, Any]:
            return {"actor": self.actor, "node": self.node, "device": "fake_gpu", "dtype": "-"}

        def run_shard(self, shard, entry_filter=None) -> dict[str, Any]:
            with self._render_lock:
                started_at = time.time()
                n = len(shard.samples)  # derived here, on the actor, as a real worker does
                if seconds:
                    time.sleep(seconds)
                finished_at = time.time()
            return {
                "shard_id": shard.shard_id,
                "entry_id": shard.entry_id,
                "label": shard.label,
                "committed": True,
                "attempt_id": "sleep",
                "planned": n,
                "ok": n,
                "failed": 0,
                "kept": n,
                "drop_reasons": {},
                "seconds": finished_at - started_at,
                "started_at": started_at,
                "finished_at": finished_at,
                "gen_seconds": seconds,
                "actor": self.actor,
                "node": self.node,
            }

        def close(self) -> None:
            pass

    return SleepWorker


class RssSampler(threading.Thread):
    """The driver's RSS every `every` seconds, from /proc/self/statm."""

    def __init__(self, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every, self.samples, self.stop = every, [], threading.Event()
        self.page = os.sysconf("SC_PAGE_SIZE")

    def rss_mb(self) -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page / 2**20

    def run(self) -> None:
        t0 = time.time()
        while not self.stop.is_set():
            self.samples.append((round(time.time() - t0, 2), round(self.rss_mb(), 1)))
            self.stop.wait(self.every)


def idle_fraction(totals: dict[str, dict[str, float]]) -> float | None:
    fractions = []
    for a in totals.values():
        span = a["last_end"] - a["first_start"]
        if span > 0:
            fractions.append(max(0.0, 1 - a["busy_s"] / span))
    return round(sum(fractions) / len(fractions), 4) if fractions else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--actors", type=int, default=48)
    ap.add_argument("--shards", type=int, default=20_000)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--rate", type=float, default=62.5, help="shards/s the pool completes (sets --sleep)")
    ap.add_argument(
        "--sleep", type=float, default=None, help="seconds per shard per actor (overrides --rate)"
    )
    ap.add_argument("--quick", action="store_true", help="CI smoke: 4 actors, 200 shards")
    args = ap.parse_args()
    if args.quick:
        args.actors, args.shards, args.rate = 4, 200, 100.0
    sleep = args.sleep if args.sleep is not None else args.actors / args.rate

    import logging

    import ray
    from plan_scale import scaled_manifest

    from dermgen.config import make_config
    from dermgen.runner import generate

    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("DERMGEN_ACTOR_STAGGER_S", "0")
    with tempfile.TemporaryDirectory(prefix="driver_scale_") as tmp:
        images = args.shards * args.shard_size
        manifest = scaled_manifest(images, Path(tmp))
        t_init = time.time()
        ray.init(
            address="local",  # a fresh local Ray, never another one running on this machine
            num_cpus=2,
            resources={"fake_gpu": args.actors},
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
        )
        init_s = time.time() - t_init
        cfg = make_config(
            manifest=str(manifest),
            model="tiny",
            output=str(Path(tmp) / "run"),
            limit=images,
            shard_size=args.shard_size,
            filter="none",
            num_actors=args.actors,
            progress_interval=3600,
        )
        sampler = RssSampler()
        sampler.start()
        u0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.time()
        summary = generate(
            cfg,
            worker_cls=sleep_worker(sleep),
            actor_options={"num_cpus": 0, "resources": {"fake_gpu": 1}, "max_concurrency": 2},
        )
        wall = time.time() - t0
        u1 = resource.getrusage(resource.RUSAGE_SELF)
        sampler.stop.set()
        sampler.join()
        ray.shutdown()
    totals = summary["actor_totals"]
    shards = sum(int(a["shards"]) for a in totals.values())
    first = min(a["first_start"] for a in totals.values())
    last = max(a["last_end"] for a in totals.values())
    cpu = (u1.ru_utime - u0.ru_utime) + (u1.ru_stime - u0.ru_stime)
    rss = sampler.samples
    n = len(rss)
    steady = [r for t, r in rss if first - t0 <= t <= last - t0] or [r for _, r in rss]
    result = {
        "actors": args.actors,
        "shards": shards,
        "shard_size": args.shard_size,
        "sleep_s": round(sleep, 4),
        "target_rate_shards_per_s": round(args.actors / sleep, 1) if sleep else None,
        "ray_init_s": round(init_s, 2),
        "wall_s": round(wall, 2),
        "pool_start_s": round(first - t0, 2),
        "dispatch_span_s": round(last - first, 2),
        "shards_per_s": round(shards / max(last - first, 1e-9), 1),
        "idle_fraction": idle_fraction(totals),
        "dispatch_ms": round(1000 * cpu / max(shards, 1), 3),
        "driver_cpu_s": round(cpu, 2),
        "rss_mb": {
            "start": rss[0][1] if rss else None,
            "middle": rss[n // 2][1] if rss else None,
            "end": rss[-1][1] if rss else None,
            "steady_min": min(steady) if steady else None,
            "steady_max": max(steady) if steady else None,
        },
        "summary_json_kb": round(len(json.dumps(summary, default=str)) / 1024, 1),
        "shards_logged": len(summary["shards"]),
        "complete": summary["complete"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
