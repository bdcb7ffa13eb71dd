"""A generator actor dying mid-shard, and running out of memory: every planned sample still lands once.

The crash is deterministic: the test runs the shards with a `ShardWorker` subclass whose `commit` calls
`os._exit` after the target shard's PNGs are written and before its commit, once (a marker file records
the crash). The subclass is made here and shipped to the Ray actors by value (cloudpickle), so the
package carries no test hook.
"""

from __future__ import annotations

import os

import pytest

from dermgen.rundir import RunDir
from dermgen.store import LocalStore

TARGET = "benign_mole-0000002-0000004"


def crash_once_worker(shard_id: str, marker: str):
    """A ShardWorker that kills its process once, after `shard_id`'s PNGs, before that shard's commit.

    The class is made inside this function, so cloudpickle sends it to the actors by value (the test
    module is not importable there); `marker` is created first, so only the first attempt dies.
    """
    from dermgen.worker import ShardWorker

    class CrashOnceWorker(ShardWorker):
        def commit(self, sid, rows, written):
            if sid == shard_id:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    pass
                else:
                    os._exit(137)
            return super().commit(sid, rows, written)

    return CrashOnceWorker


@pytest.mark.slow
def test_actor_killed_mid_shard_every_sample_once(tmp_path, ray_env, gen, exactly_once):
    marker = tmp_path / "crashed"
    ray_env({})
    out = tmp_path / "run"
    summary = gen(out, use_ray=True, num_actors=1, worker_cls=crash_once_worker(TARGET, str(marker)))
    print(
        f"actor crash: actors created {summary['actors_created']}, orphans removed "
        f"{summary['orphans_removed']}, generated {summary['generated']}"
    )
    assert marker.exists(), "the first attempt of the target shard must have died"
    assert summary["actors_created"] == 2, "the dead actor is replaced"
    assert summary["orphans_removed"] == 2, "the dead attempt's two PNGs are swept at the end"
    assert summary["complete"] and summary["generated"] == 8
    store = LocalStore(out)
    rows = RunDir(store).read_shard(TARGET, ["actor", "attempt_id"]).to_pylist()
    assert {r["actor"] for r in rows} == {"gen-1"}, "the shard was committed by the replacement actor"
    exactly_once(store, 8)


def test_out_of_memory_halves_the_batch_and_loses_nothing(tmp_path, monkeypatch, gen, exactly_once):
    """Every batch larger than one sample 'runs out of memory': the worker halves down to one."""
    import torch

    from dermgen.pipeline import Renderer

    render = Renderer.render_batch  # what the worker calls for each batch
    ooms: list[int] = []

    def render_or_oom(self, prompts, *args, **kwargs):
        if self.batch_size > 1:
            ooms.append(self.batch_size)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return render(self, prompts, *args, **kwargs)

    monkeypatch.setattr(Renderer, "render_batch", render_or_oom)
    out = tmp_path / "run"
    summary = gen(out, use_ray=False, shard_size=4, batch_size=4)
    print(f"OOM: batch sizes that failed {ooms}")
    assert ooms == [4, 2], "halved once per OOM, then kept for the worker's life"
    store = LocalStore(out)
    table = RunDir(store).read_shard("benign_mole-0000000-0000004", ["status", "batch_size"]).to_pylist()
    assert {(r["status"], r["batch_size"]) for r in table} == {("ok", 1)}
    assert summary["complete"]
    exactly_once(store, 8)
