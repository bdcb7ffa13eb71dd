"""The driver killed (SIGKILL) mid-run and the same job started again: committed shards are kept as they
are, the unfinished one is rendered again, the dead attempt's PNGs are swept, every sample lands once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dermgen.errors import PlanMismatchError
from dermgen.rundir import RUN_JSON, SHARDS_PREFIX, RunDir, shard_key
from dermgen.store import LocalStore

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(REPO_ROOT / "manifests" / "smoke.yaml")


def job_command(output: Path) -> list[str]:
    return [
        sys.executable,
        str(REPO_ROOT / "jobs" / "generate_6k.py"),
        "--manifest",
        SMOKE,
        "--model",
        "tiny",
        "--limit",
        "8",
        "--size",
        "64",
        "--filter",
        "none",
        "--shard-size",
        "4",
        "--batch-size",
        "2",
        "--no-ray",
        "--output",
        str(output),
    ]


def job_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def shard_facts(store: LocalStore) -> dict[str, tuple[int, int, tuple[str, ...]]]:
    """Per committed shard: inode, mtime and the attempt ids in its rows."""
    out = {}
    for shard_id in RunDir(store).shard_ids():
        st = os.stat(store.local_path(shard_key(shard_id)))
        attempts = tuple(
            sorted(set(RunDir(store).read_shard(shard_id, ["attempt_id"]).column("attempt_id").to_pylist()))
        )
        out[shard_id] = (st.st_ino, st.st_mtime_ns, attempts)
    return out


def in_progress(out: Path) -> bool:
    """At least one shard committed and PNGs of a not yet committed attempt on disk."""
    shards = list((out / SHARDS_PREFIX).glob("*.parquet"))
    pngs = list((out / "images").rglob("*.png"))
    return bool(shards) and len(pngs) > 4 * len(shards)


@pytest.mark.slow
def test_driver_killed_and_rerun_resumes_without_rewriting(tmp_path, exactly_once):
    out = tmp_path / "run"
    log1 = (tmp_path / "first.log").open("wb")
    proc = subprocess.Popen(job_command(out), env=job_env(), stdout=log1, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while not in_progress(out):
            assert proc.poll() is None, (
                "the job ended before it could be killed mid-run: "
                + (tmp_path / "first.log").read_text()[-2000:]
            )
            assert time.time() < deadline, "no shard committed in time"
            time.sleep(0.02)
        proc.kill()  # SIGKILL: no cleanup, no summary
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log1.close()
    store = LocalStore(out)
    before = shard_facts(store)
    run_json = store.get(RUN_JSON)
    pngs_left = len(list((out / "images").rglob("*.png")))
    print(f"killed with {len(before)} of 2 shards committed and {pngs_left} PNGs on disk")
    assert len(before) == 1 and not store.exists("summary.json")

    second = subprocess.run(job_command(out), env=job_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    after = shard_facts(store)
    for shard_id, facts in before.items():
        assert after[shard_id] == facts, f"committed shard {shard_id} was rewritten"
    assert store.get(RUN_JSON) == run_json, "run.json is bound once, not rewritten"
    summary = json.loads(store.get("summary.json"))
    print(
        f"re-run: resumed {summary['resumed_shards']} shard(s), removed {summary['orphans_removed']} orphan(s)"
    )
    assert summary["resumed_shards"] == 1
    assert summary["orphans_removed"] >= 1, "the killed attempt's PNGs are swept"
    assert summary["complete"]
    exactly_once(store, 8)


def test_rerun_of_a_finished_run_rewrites_nothing(run_copy, gen, exactly_once):
    store = LocalStore(run_copy)
    before = shard_facts(store)
    summary = gen(run_copy, use_ray=False)
    assert summary["resumed_shards"] == 4 and summary["images"] == 0
    assert shard_facts(store) == before
    exactly_once(store, 8)


def test_rerun_with_another_plan_is_refused_naming_the_change(run_copy, gen):
    before = shard_facts(LocalStore(run_copy))
    with pytest.raises(PlanMismatchError, match=r"run_seed: 0 -> 7"):
        gen(run_copy, use_ray=False, seed=7)
    assert shard_facts(LocalStore(run_copy)) == before


@pytest.mark.slow
def test_driver_killed_under_ray_and_rerun_resumes(tmp_path, exactly_once):
    """The same with a real local Ray: the killed driver's actors die with it (a shard they were finishing may
    still commit, atomically); the re-run keeps every committed shard and completes the run once."""
    out = tmp_path / "run"
    slow = tmp_path / "slow.yaml"  # 40 steps an image, 8 one-image shards: at most 4 are queued at the kill
    slow.write_text(Path(SMOKE).read_text().replace("steps: 4", "steps: 40"))
    ray_args = ["--ray-address", "local", "--num-actors", "2", "--shard-size", "1"]
    cmd = [str(slow) if a == SMOKE else a for a in job_command(out) if a != "--no-ray"] + ray_args
    log1 = (tmp_path / "first.log").open("wb")
    proc = subprocess.Popen(cmd, env=job_env(), stdout=log1, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while not list((out / SHARDS_PREFIX).glob("*.parquet")):
            assert proc.poll() is None, "the job ended early: " + (tmp_path / "first.log").read_text()[-2000:]
            assert time.time() < deadline, "no shard committed in time"
            time.sleep(0.05)
        proc.kill()  # SIGKILL the driver
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log1.close()
    time.sleep(5)  # let the orphaned actors notice their driver is gone
    store = LocalStore(out)
    before = shard_facts(store)
    print(f"driver killed with {len(before)} of 8 shards committed")
    assert 1 <= len(before) < 8 and not store.exists("summary.json")

    second = subprocess.run(cmd, env=job_env(), capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    after = shard_facts(store)
    for shard_id, facts in before.items():
        assert after[shard_id] == facts, f"committed shard {shard_id} was rewritten"
    summary = json.loads(store.get("summary.json"))
    assert summary["complete"] and summary["resumed_shards"] == len(before)
    exactly_once(store, 8)
