"""S3 faults injected between boto3 and the loopback S3 server by `fault_proxy.FaultProxy`.

Throttling (503 SlowDown), 500 InternalError, connection resets before and after the server acted, slow
answers and cut-off downloads: a run behind the proxy still holds every planned sample exactly once.
"""

from __future__ import annotations

import logging
import threading

from fault_proxy import Fault

from dermgen.rundir import RunDir, shard_key
from dermgen.store import S3Store, open_store

ALL_KINDS = ("slowdown", "internal", "reset", "reset_after", "slow", "truncate")


def test_generation_through_faulty_s3_writes_every_sample_once(s3_bucket, fault_proxy, gen, exactly_once):
    proxy = fault_proxy(
        [
            Fault("slowdown", times=2, every=4),
            Fault("internal", times=2, every=5),
            Fault("reset", times=2, every=6),
            Fault("reset_after", times=2, every=3, methods=("PUT",)),
            Fault("slow", times=2, every=9, slow_s=1.0),
            Fault("truncate", times=2, every=2, methods=("GET",)),
        ]
    )
    uri = f"s3://{s3_bucket}/faulty-run"
    summary = gen(uri, use_ray=False)
    print(f"proxy: {proxy.requests} requests, injected {dict(proxy.injected)}")
    for kind in ALL_KINDS:
        assert proxy.injected[kind] >= 1, f"the schedule never injected {kind}: {dict(proxy.injected)}"
    assert summary["complete"] and summary["generated"] == 8
    exactly_once(open_store(uri), 8)


def test_lost_answer_to_the_commit_is_not_taken_for_a_lost_race(s3_bucket, fault_proxy, gen, exactly_once):
    """The conditional PUT of a shard succeeds but its answer is lost; the retry then gets 412.

    The attempt must recognise its own commit (and keep its PNGs) rather than act as the loser.
    The same happens to run.json, whose binding check must accept the run's own object.
    """
    proxy = fault_proxy(
        [
            Fault("reset_after", times=2, methods=("PUT",), path_contains="/shards/", header="If-None-Match"),
            Fault(
                "reset_after", times=1, methods=("PUT",), path_contains="/run.json", header="If-None-Match"
            ),
        ]
    )
    uri = f"s3://{s3_bucket}/lost-answer"
    summary = gen(uri, use_ray=False)
    print(f"proxy: {proxy.requests} requests, injected {dict(proxy.injected)}")
    assert proxy.exhausted(), "every planned lost answer was injected"
    assert summary["complete"]
    exactly_once(open_store(uri), 8)


def test_commit_conflict_is_retried_not_taken_for_a_lost_race(s3_bucket, fault_proxy, gen, exactly_once):
    """AWS answers 409 ConditionalRequestConflict when another request on the key is in progress and
    asks for a retry: nothing was stored, so the attempt must try again, not discard itself."""
    proxy = fault_proxy(
        [Fault("conflict", times=3, methods=("PUT",), path_contains="/shards/", header="If-None-Match")]
    )
    uri = f"s3://{s3_bucket}/conflict"
    summary = gen(uri, use_ray=False)
    print(f"proxy: {proxy.requests} requests, injected {dict(proxy.injected)}")
    assert proxy.injected["conflict"] == 3
    assert summary["complete"]
    exactly_once(open_store(uri), 8)


def test_store_without_conditional_writes_falls_back_with_a_warning(
    s3_bucket, fault_proxy, gen, exactly_once, caplog
):
    proxy = fault_proxy([Fault("not_implemented", times=10**6, header="If-None-Match")])
    uri = f"s3://{s3_bucket}/no-conditional"
    with caplog.at_level(logging.WARNING, logger="dermgen.store"):
        summary = gen(uri, use_ray=False)
    print(f"proxy: {proxy.requests} requests, injected {dict(proxy.injected)}")
    assert proxy.injected["not_implemented"] >= 1
    warnings = [
        r for r in caplog.records if r.name == "dermgen.store" and "conditional writes" in r.getMessage()
    ]
    assert warnings, "the fallback must be logged"
    assert all(r.levelno == logging.WARNING for r in warnings)
    assert summary["complete"]
    exactly_once(open_store(uri), 8)


def test_fallback_race_may_commit_twice_and_the_sweep_repairs_it(
    s3_run_copy, fault_proxy, commit_race, exactly_once
):
    """Check-then-put cannot stop two attempts that both check before either puts (the documented gap).

    Both believe they committed; the last PUT wins, the other attempt's PNGs are orphans, and the
    end-of-run orphan sweep leaves a run that holds each sample once.
    """
    shard_id = "malignant_mole-0000002-0000004"
    fault_proxy([Fault("not_implemented", times=10**6, header="If-None-Match")])
    store = S3Store(s3_run_copy.uri)  # a new client: through the proxy
    both_checked = threading.Barrier(2)
    exists = store.exists

    def exists_after_both_checked(key: str) -> bool:
        found = exists(key)
        if key == shard_key(shard_id) and threading.current_thread() is not threading.main_thread():
            both_checked.wait(timeout=30)
        return found

    store.exists = exists_after_both_checked  # type: ignore[method-assign]
    results, attempts = commit_race(store, shard_id, 2)
    assert [r.committed for r in results] == [True, True], "both attempts passed the check"
    stored = set(RunDir(store).read_shard(shard_id, ["attempt_id"]).column("attempt_id").to_pylist())
    assert len(stored) == 1 and stored <= {a[0] for a in attempts}
    orphans = RunDir(store).sweep_orphans(RunDir(store).info().run_id)
    assert len(orphans) == 2, orphans  # the overwritten attempt's two PNGs
    exactly_once(store, 8)


def test_multipart_upload_survives_faults_on_parts(s3_bucket, fault_proxy, monkeypatch):
    """Large objects go up in parts; a failed or reset part is retried and the object is whole."""
    monkeypatch.setattr(S3Store, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    proxy = fault_proxy(
        [
            Fault("internal", times=1, methods=("PUT",), path_contains="partNumber=2"),
            Fault("reset", times=1, methods=("PUT",), path_contains="partNumber=1"),
            Fault("slowdown", times=1, methods=("POST",), path_contains="uploadId="),
        ]
    )
    store = open_store(f"s3://{s3_bucket}/big")
    data = bytes(range(256)) * (12 * 1024 * 4)  # 12 MiB: two 8 MiB-chunked parts
    store.put("weights/model.safetensors", data)
    print(f"proxy: {proxy.requests} requests, injected {dict(proxy.injected)}")
    assert proxy.exhausted()
    assert store.get("weights/model.safetensors") == data
