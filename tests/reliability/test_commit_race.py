"""Attempts racing to commit the same shard: exactly one wins, the losers delete their own PNGs.

Races run on a local folder (atomic hard link) and on the loopback S3 server (`If-None-Match: *`), first
with `commit_shard` from many threads, then with whole `ShardWorker.run_shard` calls held at the commit.
"""

from __future__ import annotations

import errno
import json
import os
import threading

import pytest

from dermgen.errors import StoreError
from dermgen.rundir import RUN_JSON, RunDir, shard_key
from dermgen.shards import commit_shard
from dermgen.store import LocalStore, Store

SHARD = "benign_mole-0000000-0000002"


def check_one_winner(store: Store, shard_id: str, results: list, attempts: list) -> None:
    winners = [i for i, r in enumerate(results) if r.committed]
    print(f"{len(results)} attempts raced on {shard_id}: winners {len(winners)}")
    assert len(winners) == 1, [r.committed for r in results]
    win_id, _, win_keys = attempts[winners[0]]
    stored = RunDir(store).read_shard(shard_id, ["attempt_id"]).column("attempt_id").to_pylist()
    assert set(stored) == {win_id}, "the committed Parquet must be the winner's"
    assert all(store.exists(k) for k in win_keys)
    for i, (_, _, keys) in enumerate(attempts):
        if i != winners[0]:
            assert not any(store.exists(k) for k in keys), f"attempt {i} lost but left its PNGs"


def test_commit_race_local_one_winner(run_copy, commit_race, exactly_once):
    store = LocalStore(run_copy)
    results, attempts = commit_race(store, SHARD, n=8)
    check_one_winner(store, SHARD, results, attempts)
    exactly_once(store, 8)


def test_commit_race_s3_one_winner(s3_run_copy, commit_race, exactly_once):
    results, attempts = commit_race(s3_run_copy, SHARD, n=6)
    check_one_winner(s3_run_copy, SHARD, results, attempts)
    exactly_once(s3_run_copy, 8)


def test_recommit_of_a_committed_shard_changes_nothing(run_copy, commit_race, exactly_once):
    """A late attempt (e.g. a presumed-dead actor that was only slow) finds the shard committed."""
    store = LocalStore(run_copy)
    path = store.local_path(shard_key(SHARD))
    before = os.stat(path)
    rows = RunDir(store).read_shard(SHARD).to_pylist()
    _, late_rows, late_keys = commit_race.new_attempt(store, rows)
    result = commit_shard(store, SHARD, late_rows, late_keys)
    assert not result.committed
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not any(store.exists(k) for k in late_keys)
    exactly_once(store, 8)


@pytest.fixture(scope="module")
def shard_worker(base_run):
    """One tiny-model ShardWorker for the module (its renderer is shared by the racing threads)."""
    from dermgen.worker import ShardWorker, WorkerOptions

    run_id = json.loads(LocalStore(base_run).get(RUN_JSON))["run_id"]
    worker = ShardWorker(
        WorkerOptions(model="tiny", filter="none", batch_size=2), LocalStore(base_run), run_id
    )
    yield worker
    worker.close()


def planned_shard(store: Store, shard_id: str):
    from dermgen.rundir import RunDir

    plan = RunDir(store).info().plan()
    return next(s for s in plan.shards if s.shard_id == shard_id)


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_run_shard_race_one_winner(backend, request, shard_worker, commit_race, monkeypatch, exactly_once):
    """Two whole attempts of one shard (render, PNGs, commit) meet at the commit: one wins."""
    store: Store = request.getfixturevalue("s3_run_copy" if backend == "s3" else "run_copy")
    if backend == "local":
        store = LocalStore(store)
    commit_race.uncommit(store, SHARD)
    shard = planned_shard(store, SHARD)
    render_lock = threading.Lock()  # one pipeline serves both threads; the race is at the store
    render = shard_worker.renderer.render

    def locked_render(*args, **kwargs):
        with render_lock:
            return render(*args, **kwargs)

    monkeypatch.setattr(shard_worker.renderer, "render", locked_render)
    monkeypatch.setattr(shard_worker, "store", store)
    barrier = threading.Barrier(2)
    put_if_absent = store.put_if_absent

    def meet_then_put(key, data):
        barrier.wait(timeout=60)  # both attempts have written their PNGs and reach the commit together
        return put_if_absent(key, data)

    monkeypatch.setattr(store, "put_if_absent", meet_then_put)
    summaries: list = [None, None]

    def attempt(i: int) -> None:
        summaries[i] = shard_worker.run_shard(shard)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(summaries), "an attempt did not finish"
    committed = [s for s in summaries if s["committed"]]
    print(f"run_shard race on {backend}: committed flags {[s['committed'] for s in summaries]}")
    assert len(committed) == 1
    stored = set(RunDir(store).read_shard(SHARD, ["attempt_id"]).column("attempt_id").to_pylist())
    assert stored == {committed[0]["attempt_id"]}
    loser = next(s for s in summaries if not s["committed"])
    assert not [k for k in store.list("images/") if f".{loser['attempt_id']}." in k], "loser left PNGs"
    exactly_once(store, 8)


def test_output_without_hard_links_is_refused_up_front(tmp_path, monkeypatch):
    """A filesystem without hard links cannot give the atomic commit: refused before any GPU work."""

    def no_links(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(StoreError, match="hard links") as info:
        LocalStore(tmp_path / "out").check_writable()
    assert str(tmp_path / "out") in str(info.value)
    assert not [p for p in (tmp_path / "out").iterdir()], "the probe files must be cleaned up"
