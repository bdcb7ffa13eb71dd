"""ShardWorker on its own (no Ray): short batches, inline post-processing on CPU devices."""

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dermgen.manifest import parse_manifest
from dermgen.pipeline import Renderer
from dermgen.plan import plan_run
from dermgen.worker import InlineExecutor, ShardWorker, WorkerOptions


def one_shard(count: int):
    entry = {"id": "mole", "label": "benign", "prompt": "benign mole", "count": count, "samplers": ["Euler"]}
    entry.update(steps=3, size=64)
    return plan_run(parse_manifest({"name": "t", "entries": [entry]}), shard_size=count).shards[0]


@pytest.fixture(scope="module")
def short_batch_rows(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    worker = ShardWorker(
        WorkerOptions(model="tiny", filter="none", batch_size=4, device="cpu"), str(store), "r"
    )
    try:
        assert isinstance(worker._post, InlineExecutor)  # CPU device: post-processing between batches
        summary = worker.run_shard(one_shard(6))
    finally:
        worker.close()
    assert summary["committed"] and summary["ok"] == 6
    return summary, pq.read_table(store / "shards").to_pylist()


def test_a_short_batch_renders_unpadded_and_records_its_size(short_batch_rows):
    _, rows = short_batch_rows
    assert [r["batch_size"] for r in rows] == [4, 4, 4, 4, 2, 2]


def test_the_driver_gets_a_small_summary_without_image_bytes(short_batch_rows):
    summary, _ = short_batch_rows
    text = json.dumps(summary)  # JSON-able: plain numbers and strings, no bytes anywhere
    assert len(text) < 2048 and summary["planned"] == 6 and summary["shard_id"] == "mole-0000000-0000006"


def test_a_short_batch_image_re_renders_from_its_row(short_batch_rows):
    r = short_batch_rows[1][-1]
    again = Renderer("tiny", batch_size=r["batch_size"], device="cpu").render(
        [r["prompt"]], [r["negative_prompt"]], [r["seed"]], sampler=r["sampler"], steps=r["steps"],
        cfg_scale=r["cfg_scale"], width=r["width"], height=r["height"],
    )[0]  # fmt: skip
    assert np.array_equal(again, np.asarray(Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB")))


def test_compiled_renderers_always_pad():
    """A compiled UNet needs static shapes, so short batches are padded whatever the caller asked."""
    eager = Renderer("tiny", batch_size=4, device="cpu", pad_batches=False)
    compiled = Renderer("tiny", batch_size=4, device="cpu", pad_batches=False, compile=True)
    assert (eager.rendered_batch_size(3), compiled.rendered_batch_size(3)) == (3, 4)


def test_inline_executor_delivers_results_and_errors_through_futures():
    ex = InlineExecutor()
    assert ex.submit(lambda a, b: a + b, 2, b=3).result() == 5
    with pytest.raises(ZeroDivisionError):
        ex.submit(lambda: 1 / 0).result()


def test_two_concurrent_shard_calls_render_one_at_a_time_and_commit_beside_rendering(tmp_path, monkeypatch):
    """What a GPU actor does: the next shard renders while the previous one commits."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import dermgen.worker as worker_mod

    events: list[tuple[str, str, float]] = []
    rendering = threading.Semaphore(1)  # fails the test if two renders ever overlap
    real_render, real_commit = Renderer.render_batch, worker_mod.commit_shard

    def render(self, prompts, *args, **kwargs):
        assert rendering.acquire(blocking=False), "two shards rendered at once"
        try:
            events.append(("render", prompts[0], time.perf_counter()))
            return real_render(self, prompts, *args, **kwargs)
        finally:
            rendering.release()

    def slow_commit(store, shard_id, rows, written):
        events.append(("commit-start", shard_id, time.perf_counter()))
        time.sleep(1.0)  # a slow store
        try:
            return real_commit(store, shard_id, rows, written)
        finally:
            events.append(("commit-end", shard_id, time.perf_counter()))

    monkeypatch.setattr(Renderer, "render_batch", render)  # what the worker calls
    monkeypatch.setattr(worker_mod, "commit_shard", slow_commit)
    entries = [
        {
            "id": name,
            "label": "benign",
            "prompt": name,
            "count": 4,
            "samplers": ["Euler"],
            "steps": 2,
            "size": 64,
        }
        for name in ("first", "second")
    ]
    shards = plan_run(parse_manifest({"name": "t", "entries": entries}), shard_size=4).shards
    worker = ShardWorker(
        WorkerOptions(model="tiny", filter="none", batch_size=4, device="cpu"), str(tmp_path), "r"
    )
    try:
        with ThreadPoolExecutor(max_workers=2) as calls:
            results = list(calls.map(worker.run_shard, shards))
    finally:
        worker.close()
    assert [r["committed"] and r["ok"] for r in results] == [4, 4]
    renders = {prompt: t for kind, prompt, t in events if kind == "render"}
    first_done = next(t for kind, sid, t in events if kind == "commit-end")
    # called one after the other, the second shard would render only after the first's commit ended
    assert max(renders.values()) < first_done, events
    assert len(list((tmp_path / "shards").glob("*.parquet"))) == 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_pixels_are_marked_failed_with_a_reason(tmp_path, bad):
    """fp16 overflow on a GPU gives NaN/inf; here a NaN (or inf) is injected into the second image's decode."""
    worker = ShardWorker(
        WorkerOptions(model="tiny", filter="none", batch_size=4, device="cpu"), str(tmp_path), "r"
    )
    vae = worker.renderer.pipe.vae
    decode = vae.decode

    def poisoned(z, *args, **kwargs):
        out = decode(z, *args, **kwargs)
        out[0][1, 0, 3, 5] = bad
        return out

    vae.decode = poisoned
    try:
        summary = worker.run_shard(one_shard(3))
    finally:
        worker.close()
    rows = pq.read_table(tmp_path / "shards").to_pylist()
    assert summary["committed"] and summary["ok"] == 2 and summary["failed"] == 1
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    bad_row = rows[1]
    assert "non-finite pixels" in bad_row["error"] and bad_row["image"] is None and not bad_row["kept"]
    assert bad_row["drop_reasons"] == ["failed"]
    assert not list((tmp_path / "images").rglob("mole-0000001.*.png"))  # no PNG for the failed sample


def test_rows_record_where_the_noise_was_drawn(short_batch_rows):
    assert {r["noise"] for r in short_batch_rows[1]} == {"cpu"}
