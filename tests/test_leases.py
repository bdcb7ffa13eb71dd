"""Shard claims on both stores: compare-and-swap primitives, claim / renew / expire / take over / release,
the scheduler's gate (defer, adopt) and the claim layout."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from dermgen.leases import COMMITTED, MINE, TAKEN, ShardLeases
from dermgen.rundir import claim_key, classify, shard_key
from dermgen.rundir.claims import Claim, host_identity, read_claim, read_claims, sweep_stale_claims
from dermgen.store import LocalStore, open_store

SHARD = "benign_mole-0000000-0000004"
RUN = "run0"


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "out")
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(f"s3://{bucket}/out")


def leases(store, lease_s=30.0, renew_s=10.0, run_id=RUN) -> ShardLeases:
    return ShardLeases(store, run_id, lease_s, renew_s)


def write_claim(store, shard_id=SHARD, **fields) -> Claim:
    """A claim as another driver left it (a foreign host unless said otherwise)."""
    claim = Claim.new(fields.pop("run_id", RUN), shard_id, "other-driver", 30.0).model_copy(
        update={"host_id": "another-machine", "host": "elsewhere", **fields}
    )
    store.put(claim_key(shard_id), claim.to_bytes())
    return claim


# -- the store's compare-and-swap primitives -----------------------------------------------------------


def test_versioned_writes_act_only_on_the_version_read(store):
    key = "claims/x.json"
    v1 = store.create_versioned(key, b"one")
    assert v1 and store.create_versioned(key, b"again") is None
    data, version = store.get_versioned(key)
    assert (data, version) == (b"one", v1)
    v2 = store.replace_if_version(key, b"two", v1)
    assert v2 and v2 != v1 and store.get(key) == b"two"
    assert store.replace_if_version(key, b"three", v1) is None, "a stale version never overwrites"
    assert store.delete_if_version(key, v1) is False and store.get(key) == b"two"
    assert store.delete_if_version(key, v2) is True and not store.exists(key)
    assert store.replace_if_version(key, b"four", v2) is None and not store.exists(key)
    with pytest.raises(KeyError):
        store.get_versioned(key)


def test_s3_without_conditional_requests_falls_back_to_check_then_act(s3_bucket, caplog):
    """An S3 endpoint that rejects If-Match / If-None-Match: the same answers from check-then-act, with a
    warning that a takeover race can no longer be ruled out."""
    from botocore.exceptions import ClientError

    store = open_store(f"s3://{s3_bucket}/out")
    real_call = store._call

    def no_conditions(what, method, *args, **kwargs):
        if "IfMatch" in kwargs or "IfNoneMatch" in kwargs:
            raise ClientError(
                {"Error": {"Code": "NotImplemented"}, "ResponseMetadata": {"HTTPStatusCode": 501}}, what
            )
        return real_call(what, method, *args, **kwargs)

    store._call = no_conditions
    key = "claims/y.json"
    v1 = store.create_versioned(key, b"one")
    assert v1 and store.create_versioned(key, b"again") is None
    assert not store.conditional_writes  # learnt once, then not asked again
    v2 = store.replace_if_version(key, b"two", v1)
    assert v2 and not store.compare_and_swap and store.get(key) == b"two"
    assert store.replace_if_version(key, b"three", v1) is None and store.get(key) == b"two"
    assert store.delete_if_version(key, v1) is False
    assert store.delete_if_version(key, v2) is True and not store.exists(key)
    assert "check-then-act" in caplog.text


def test_two_takeovers_of_one_version_have_one_winner(store):
    """Both drivers read the same expired claim; both try to replace it; exactly one succeeds."""
    key = claim_key(SHARD)
    store.put(key, b"expired")
    _, version = store.get_versioned(key)
    results = [store.replace_if_version(key, f"driver {i}".encode(), version) for i in range(2)]
    assert sum(r is not None for r in results) == 1
    assert store.get(key) == (b"driver 0" if results[0] else b"driver 1")


def test_local_takeover_race_between_threads_has_one_winner(tmp_path):
    store = LocalStore(tmp_path / "out")
    key = claim_key(SHARD)
    for _ in range(20):
        store.put(key, b"expired")
        _, version = store.get_versioned(key)
        barrier = threading.Barrier(4)
        wins = []

        def take(i: int, version=version, barrier=barrier, wins=wins) -> None:
            barrier.wait(timeout=10)
            if store.replace_if_version(key, f"t{i}".encode(), version):
                wins.append(i)

        threads = [threading.Thread(target=take, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1 and store.get(key) == f"t{wins[0]}".encode()


# -- claims ---------------------------------------------------------------------------------------------


def test_a_claim_keeps_other_drivers_off_until_released(store):
    a, b = leases(store), leases(store)
    try:
        assert a.acquire(SHARD) == MINE
        assert a.acquire(SHARD) == MINE, "acquiring a held claim again is a no-op"
        claim, _ = read_claim(store, SHARD)
        assert claim.driver == a.driver and claim.run_id == RUN and claim.expires_at > time.time()
        assert b.acquire(SHARD) == TAKEN
        a.release(SHARD, wait=True)
        assert not store.exists(claim_key(SHARD))
        assert b.acquire(SHARD) == MINE
    finally:
        a.close()
        b.close()


def test_renewal_extends_the_claim_while_it_is_held(store):
    a = leases(store, lease_s=2.0, renew_s=0.2)
    try:
        assert a.acquire(SHARD) == MINE
        first, v1 = read_claim(store, SHARD)
        time.sleep(1.0)
        later, v2 = read_claim(store, SHARD)
        assert v2 != v1 and later.renewed_at > first.renewed_at and later.expires_at > first.expires_at
        assert later.token != first.token and later.acquired_at == first.acquired_at
        time.sleep(1.5)  # past the first expiry: still live thanks to renewals
        assert read_claim(store, SHARD)[0].is_live(RUN)
        assert leases(store).acquire(SHARD) == TAKEN
    finally:
        a.close()
    assert not store.exists(claim_key(SHARD)), "close releases what is held"


def test_an_expired_claim_is_taken_over(store):
    write_claim(store, expires_at=time.time() - 1)
    b = leases(store)
    try:
        assert b.acquire(SHARD) == MINE
        assert read_claim(store, SHARD)[0].driver == b.driver and b.taken_over == 1
    finally:
        b.close()


def test_a_live_claim_of_another_machine_is_respected_until_it_expires(store):
    write_claim(store, expires_at=time.time() + 1.5)
    b = leases(store)
    try:
        assert b.acquire(SHARD) == TAKEN
        time.sleep(1.6)
        assert b.acquire(SHARD) == MINE
    finally:
        b.close()


def test_a_dead_driver_on_this_host_leaves_claims_that_are_stale_at_once(store):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    write_claim(store, host_id=host_identity(), pid=int(dead.stdout), expires_at=time.time() + 600)
    claim, _ = read_claim(store, SHARD)
    assert not claim.is_live(RUN)
    b = leases(store)
    try:
        assert b.acquire(SHARD) == MINE and b.taken_over == 1
    finally:
        b.close()


def test_a_claim_of_another_run_or_unreadable_is_stale(store):
    write_claim(store, run_id="an-older-run")
    assert not read_claim(store, SHARD)[0].is_live(RUN)
    store.put(claim_key("malignant_mole-0000000-0000004"), b"not json")
    assert read_claim(store, "malignant_mole-0000000-0000004")[0] is None
    b = leases(store)
    try:
        assert b.acquire(SHARD) == MINE
        assert b.acquire("malignant_mole-0000000-0000004") == MINE
    finally:
        b.close()


def test_a_committed_shard_is_reported_not_claimed(store):
    store.put(shard_key(SHARD), b"parquet")
    b = leases(store)
    assert b.acquire(SHARD) == COMMITTED
    assert not store.exists(claim_key(SHARD)) and b.held == []


def test_a_claim_lost_while_held_is_dropped_and_never_deleted(store):
    a = leases(store)
    try:
        assert a.acquire(SHARD) == MINE
        theirs = write_claim(store)  # it expired and another driver took it over meanwhile
        a.renew()
        assert a.held == [] and a.lost == 1
        a.release(SHARD)
        assert read_claim(store, SHARD)[0].token == theirs.token, "another driver's claim is left alone"
    finally:
        a.close()


def test_sweep_of_stale_claims_removes_only_stale_ones(store):
    live = write_claim(store, "benign_mole-0000000-0000004")
    write_claim(store, "benign_mole-0000004-0000008", expires_at=time.time() - 1)
    removed = sweep_stale_claims(store, RUN, read_claims(store))
    assert removed == [claim_key("benign_mole-0000004-0000008")]
    assert set(read_claims(store)) == {"benign_mole-0000000-0000004"}
    assert read_claim(store, "benign_mole-0000000-0000004")[0].token == live.token


def test_lease_settings_are_validated():
    from dermgen.config import make_config
    from dermgen.errors import ConfigError

    with pytest.raises(ConfigError, match="--claim-renew-s"):
        make_config(claim_lease_s=10, claim_renew_s=10)
    with pytest.raises(ConfigError, match="--claim-lease-s"):
        make_config(claim_lease_s=0.1)
    cfg = make_config()
    assert cfg.claim_renew_s < cfg.claim_lease_s


def test_claims_are_the_runs_own_keys_not_strays():
    keys = ["run.json", claim_key(SHARD), "claims/notashard.json", "shards/" + SHARD + ".parquet"]
    listing = classify(keys)
    assert listing.claims == [SHARD]
    assert listing.strays == ["claims/notashard.json"]
    assert classify([claim_key(SHARD)]).strays == [claim_key(SHARD)], "without run.json: somebody else's"


# -- the scheduler's gate -------------------------------------------------------------------------------


class FakeGate:
    """Verdicts by shard id; records releases."""

    def __init__(self, verdicts: dict[str, str], summaries: dict[str, dict]) -> None:
        self.verdicts = verdicts
        self.summaries = summaries
        self.released: list[str] = []

    def acquire(self, shard_id: str) -> str:
        return self.verdicts.get(shard_id, MINE)

    def release(self, shard_id: str) -> None:
        self.released.append(shard_id)

    def committed_summary(self, shard_id: str) -> dict:
        return self.summaries[shard_id]


def test_scheduler_defers_taken_shards_and_adopts_committed_ones():
    from dermgen.manifest import parse_manifest
    from dermgen.plan import plan_run
    from dermgen.scheduler import ShardScheduler

    m = parse_manifest(
        {
            "name": "t",
            "defaults": {"samplers": ["Euler"], "steps": 2, "size": 64},
            "entries": [{"id": "e", "label": "benign", "prompt": "p", "count": 8}],
        }
    )
    plan = plan_run(m, shard_size=2, cap_factor=3.0)
    ids = [s.shard_id for s in plan.shards]
    summary = {"entry_id": "e", "planned": 2, "ok": 2, "kept": 2, "end": 4, "drop_reasons": {}}
    gate = FakeGate({ids[0]: TAKEN, ids[1]: COMMITTED}, {ids[1]: summary})
    s = ShardScheduler(plan, gate=gate)
    got = s.next_shard()
    assert got.shard_id == ids[2], "taken and committed shards are passed over"
    assert s.adopted == 1 and list(s.deferred) == [plan.shards[0]]
    assert s.next_shard().shard_id == ids[3]
    assert s.next_shard() is None and s.waiting and not s.finished
    for shard in (plan.shards[2], plan.shards[3]):
        s.complete(shard, dict(summary, end=shard.end))
    assert gate.released == [ids[2], ids[3]]
    gate.verdicts[ids[0]] = COMMITTED  # the other driver committed it meanwhile
    gate.summaries[ids[0]] = dict(summary, end=2)
    assert s.retry_deferred() == 1
    assert s.next_shard() is None and s.finished and s.adopted == 2
    assert s.report()["e"]["kept"] == 8 and not s.shortfalls()


def test_prefetch_claims_several_shards_at_once(store):
    free, taken, done = (f"benign_mole-{i:07d}-{i + 2:07d}" for i in (0, 2, 4))
    write_claim(store, taken)
    store.put(shard_key(done), b"parquet")
    b = leases(store)
    try:
        b.prefetch([free, taken, done])
        assert b.held == [free] and read_claim(store, free)[0].driver == b.driver
        store.delete(claim_key(taken))  # answers come from what prefetch found, once
        assert [b.acquire(s) for s in (free, taken, done)] == [MINE, TAKEN, COMMITTED]
        assert b.acquire(taken) == MINE, "a second look goes to the store"
    finally:
        b.close()
    assert read_claims(store) == {}
