"""What the run-wide duplicate check costs an actor (issue 17): matching against its replica vs the round
trip to the run's DuplicateLog on Ray.

    python benchmarks/duplicate_log.py [--actors 2] [--batch 16]

The 120 Derm-T2IM samples in tests/assets and three hard copies of each (turned, cropped, resized,
colour-shifted, JPEG 75) are split into batches and handed round-robin to ``--actors`` threads, each with
its own RunIndex joined to one DuplicateLog held in a real local Ray actor (the runner's set-up). Prints
JSON: per batch, the time matching against the replica and the log's round trip (append + answer), the
bytes an append returns, and how many images were kept (per group: an original and its copies) with the
run's log and by one process taking the same images in the same order without a log. The two should
agree up to the order the log puts concurrent batches in. (Two independent hard copies of one image are
harder to match than a copy and its original: a group can keep two copies, with or without the log.)
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--copies", type=int, default=3)
    args = ap.parse_args()

    import ray

    from dermgen.filters.dedup import fingerprint, iter_image_files, read_rgb
    from dermgen.filters.run_index import DuplicateCandidate, DuplicateLog, RunIndex
    from filterlab.copies import hard_copy

    rng = np.random.default_rng(0)
    originals = [read_rgb(p) for p in iter_image_files(REPO / "tests" / "assets" / "derm-t2im-samples")]
    items = []  # (sample id, image, is a copy), shuffled so copies often land on another thread
    for i, img in enumerate(originals):
        items.append((f"orig-{i}", img, False))
        for c in range(args.copies):
            items.append((f"copy-{i}-{c}", hard_copy(img, rng, orientation=int(rng.integers(8))), True))
    order = rng.permutation(len(items))
    items = [items[k] for k in order]
    t = time.perf_counter()
    fps = [(sid, fingerprint(img), is_copy) for sid, img, is_copy in items]
    fingerprint_ms = (time.perf_counter() - t) / len(items) * 1e3

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    log_actor = ray.remote(num_cpus=0)(DuplicateLog).remote()

    class Proxy:
        def __init__(self) -> None:
            self.round_trips: list[float] = []
            self.answer_bytes: list[int] = []

        def append(self, actor, seen, batch, withdrawn_seen):
            t0 = time.perf_counter()
            res = ray.get(log_actor.append.remote(actor, seen, batch, withdrawn_seen))
            self.round_trips.append(time.perf_counter() - t0)
            self.answer_bytes.append(len(pickle.dumps(res)))
            return res

        def withdraw(self, sample_ids):
            log_actor.withdraw.remote(sample_ids)

    batches = [fps[k : k + args.batch] for k in range(0, len(fps), args.batch)]
    proxies = [Proxy() for _ in range(args.actors)]
    indexes = [RunIndex(f"gen-{j}", proxies[j]) for j in range(args.actors)]
    check_s = [0.0] * args.actors
    verdicts: dict[str, tuple[bool, float]] = {}
    lock = threading.Lock()

    def actor(j: int) -> None:
        for b in batches[j :: args.actors]:
            cands = [DuplicateCandidate(sid, fp, 0.89) for sid, fp, _ in b]
            t0 = time.perf_counter()
            sims = indexes[j].check_and_add(cands)
            check_s[j] += time.perf_counter() - t0
            with lock:
                verdicts.update({sid: (is_copy, s) for (sid, _, is_copy), s in zip(b, sims, strict=True)})

    t = time.perf_counter()
    threads = [threading.Thread(target=actor, args=(j,)) for j in range(args.actors)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    stats = ray.get(log_actor.stats.remote())
    ray.shutdown()

    # the same images in the same order through one RunIndex without a log: what one process decides
    alone = RunIndex()
    sims_alone = alone.check_and_add([DuplicateCandidate(sid, fp, 0.89) for sid, fp, _ in fps])
    kept_alone = {sid for (sid, _, _), s in zip(fps, sims_alone, strict=True) if s <= 0.89}

    trips = np.array([x for p in proxies for x in p.round_trips]) * 1e3
    answer = np.array([x for p in proxies for x in p.answer_bytes])
    total_check = sum(check_s)
    kept = {sid for sid, (_, s) in verdicts.items() if s <= 0.89}

    def per_group(kept_ids: set[str]) -> dict[str, int]:
        """Kept images per group (an original and its copies): ideally one each."""
        groups: dict[str, int] = {}
        for sid in kept_ids:
            g = sid.split("-")[1]
            groups[g] = groups.get(g, 0) + 1
        return {
            "kept": len(kept_ids),
            "groups_with_one_kept": sum(1 for v in groups.values() if v == 1),
            "groups_with_none_kept": len(originals) - len(groups),
        }

    print(
        json.dumps(
            {
                "benchmark": "duplicate_log",
                "actors": args.actors,
                "batch": args.batch,
                "images": len(items),
                "groups": len(originals),
                "fingerprint_ms_per_image": round(fingerprint_ms, 2),
                "check_ms_per_image": round(total_check / len(items) * 1e3, 2),
                "log_round_trip_ms": {
                    "calls": len(trips),
                    "p50": round(float(np.percentile(trips, 50)), 2),
                    "p95": round(float(np.percentile(trips, 95)), 2),
                    "share_of_check_time": round(float(trips.sum() / 1e3 / total_check), 3),
                },
                "answer_kb": {
                    "p50": round(float(np.percentile(answer, 50)) / 1024, 1),
                    "max": round(float(answer.max()) / 1024, 1),
                },
                "with_log": per_group(kept),
                "one_process_same_order": per_group(kept_alone),
                "withdrawn_on_log_order": sum(ix.withdrawn for ix in indexes),
                "log": stats,
                "wall_s": round(wall, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
