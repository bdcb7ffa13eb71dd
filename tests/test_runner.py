"""The Ray runner: actor pool sizing, spreading shards, keeping every actor busy."""

from collections import Counter

import pyarrow.parquet as pq
import pytest
from support import generate_run


@pytest.fixture
def ray_4_gpus():
    """A separate local Ray that advertises 4 (simulated) GPUs; the shared one is restarted afterwards."""
    import ray

    ray.shutdown()
    ray.init(address="local", num_cpus=4, num_gpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_shards_spread_evenly_over_4_gpu_actors_and_none_idles(tmp_path, ray_4_gpus):
    out = tmp_path / "run"
    summary = generate_run(out, limit=32, shard_size=2, batch_size=2, use_ray=True)
    actors = summary["actors"]
    assert len(actors) == 4  # one actor per GPU, sized to the cluster
    log = summary["shards"]
    assert len(log) >= 16 and len({s["shard_id"] for s in log}) == len(log)
    per_actor = Counter(s["actor"] for s in log)
    # every actor takes a fair part (dispatch is dynamic: on a busy 2-core machine one CPU actor can run
    # slower than the others, so the counts are not asserted equal)
    assert len(per_actor) == 4 and min(per_actor.values()) >= len(log) // 8, per_actor
    rows = [r for p in sorted((out / "shards").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len(rows) == 32 and len({r["sample_id"] for r in rows}) == 32
    # No actor sits idle while shards remain: after an actor finishes a shard, no shard starts later
    # than a short hand-over unless that actor is already busy with its next one.
    slack = 1.0
    for actor in per_actor:
        mine = sorted((s for s in log if s["actor"] == actor), key=lambda s: s["started_at"])
        for k, s in enumerate(mine):
            next_start = mine[k + 1]["started_at"] if k + 1 < len(mine) else float("inf")
            idle_from = s["finished_at"] + slack
            if next_start > idle_from:
                late = [o["shard_id"] for o in log if o["started_at"] > idle_from]
                assert not late, f"{actor} idle after {s['shard_id']} while {late} had not started"


def test_cpu_cluster_gets_cpu_actors(tmp_path, ray_local):
    summary = generate_run(tmp_path / "run", limit=4, shard_size=2, batch_size=2, use_ray=True, num_actors=2)
    # two actors were asked for; every one that came up did so on the CPU. Which of them renders the
    # two shards, and whether the second has even reported before the run ends, depends on start-up
    # timing: on a loaded machine the first ready actor may finish both shards before the other answers.
    assert summary["actors_created"] == 2
    assert summary["actors"] and set(summary["actors"]) <= {"gen-0", "gen-1"}
    assert {a["device"] for a in summary["actors"].values()} == {"cpu"}
    assert {s["actor"] for s in summary["shards"]} <= set(summary["actors"])
    shard_ids = [s["shard_id"] for s in summary["shards"]]
    assert shard_ids and len(shard_ids) == len(set(shard_ids))  # every shard rendered once


def test_a_stale_recorded_cluster_is_seen_as_gone(tmp_path):
    """A cluster `ray start` recorded and that was killed without `ray stop`: a bare `ray.init()` would
    wait on it for minutes; the runner sees that it does not answer (and starts a local Ray instead)."""
    import socket

    from dermgen.runner import recorded_cluster

    assert recorded_cluster(tmp_path) is None  # nothing recorded
    (tmp_path / "ray").mkdir()
    with socket.socket() as listening:  # a port that answers
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}")
        assert recorded_cluster(tmp_path) == (f"127.0.0.1:{port}", True)
    # the same port once nothing listens on it
    assert recorded_cluster(tmp_path) == (f"127.0.0.1:{port}", False)
