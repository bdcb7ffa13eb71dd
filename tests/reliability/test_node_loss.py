"""A worker node removed mid-run (`ray.cluster_utils.Cluster`): the run finishes on the remaining node.

The head has no CPUs, so generator actors live on the two worker nodes (one CPU each, one actor each).
Once both actors have committed a shard, one node is removed while its actor still holds queued shards:
24 one-image shards, so that even when one actor starts seconds after the other (a loaded machine) at
least QUEUE_DEPTH shards per actor are still to do at the removal, and the lost actor has some in flight.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from dermgen.rundir import RunDir
from dermgen.runner import QUEUE_DEPTH
from dermgen.store import LocalStore

SMOKE_TEXT = (Path(__file__).resolve().parents[2] / "manifests" / "smoke.yaml").read_text()
SHARDS = 24


@pytest.fixture
def cluster(no_ray):
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    yield c, nodes
    c.shutdown()


def actors_with_commits(store) -> set[str]:
    try:
        return {a for _, t in RunDir(store).iter_tables(["actor"]) for a in t.column("actor").to_pylist()}
    except Exception:  # noqa: BLE001 - the run is writing; try again
        return set()


@pytest.mark.slow
def test_node_removed_mid_run_every_sample_once(tmp_path, cluster, gen, exactly_once):
    c, nodes = cluster
    out = tmp_path / "run"
    store = LocalStore(out)
    removed: dict[str, float] = {}

    def remove_a_node_when_both_actors_work() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and len(actors_with_commits(store)) < 2:
            time.sleep(0.1)
        if len(actors_with_commits(store)) >= 2:
            c.remove_node(nodes[1], allow_graceful=False)
            removed["committed_before"] = len(list(RunDir(store).iter_tables(["sample_id"])))

    killer = threading.Thread(target=remove_a_node_when_both_actors_work, daemon=True)
    killer.start()
    # 40 steps per image (the smoke manifest has 4) so the run outlasts the second actor's start-up
    manifest = tmp_path / "slow.yaml"
    text = SMOKE_TEXT.replace("steps: 4", "steps: 40").replace("count: 4", f"count: {SHARDS // 2}")
    manifest.write_text(text)
    summary = gen(
        out,
        use_ray=True,
        num_actors=2,
        shard_size=1,
        limit=SHARDS,
        ray_address=c.address,
        manifest=str(manifest),
    )
    killer.join(timeout=10)
    print(
        f"node loss: removed after {removed.get('committed_before')} of {SHARDS} shards committed; actors created "
        f"{summary['actors_created']}, orphans removed {summary['orphans_removed']}"
    )
    assert "committed_before" in removed, "the node was never removed"
    assert removed["committed_before"] <= SHARDS - 2 * QUEUE_DEPTH, (
        "the node must go while both actors hold shards"
    )
    assert summary["actors_created"] >= 3, "the lost actor was noticed and a replacement requested"
    assert summary["complete"] and summary["generated"] == SHARDS
    exactly_once(store, SHARDS)
