from dermgen.manifest import parse_manifest
from dermgen.plan import plan_run
from dermgen.scheduler import ShardScheduler


def plan(count=8, cap=3.0):
    m = parse_manifest(
        {"name": "t", "entries": [{"id": "a", "label": "benign", "prompt": "p", "count": count, "size": 64}]}
    )
    return plan_run(m, shard_size=4, cap_factor=cap)


def summary(shard, kept):
    return {
        "entry_id": shard.entry_id,
        "planned": len(shard),
        "ok": len(shard),
        "kept": kept,
        "drop_reasons": {"ink>0.08": len(shard) - kept},
    }


def drain(sched, keep_fraction):
    order = []
    while (shard := sched.next_shard()) is not None:
        order.append(shard)
        sched.complete(shard, summary(shard, int(len(shard) * keep_fraction)))
    return order


def test_all_kept_needs_no_topup():
    s = ShardScheduler(plan())
    shards = drain(s, 1.0)
    assert len(shards) == 2 and s.finished and not s.shortfalls()


def test_topup_until_kept_target_met():
    s = ShardScheduler(plan())
    shards = drain(s, 0.5)
    assert any(sh.topup for sh in shards)
    rep = s.report()["a"]
    assert rep["kept"] >= 8 and rep["shortfall"] == 0 and rep["generated"] <= 24


def test_cap_stops_and_reports_shortfall():
    s = ShardScheduler(plan(cap=2.0))
    drain(s, 0.25)
    rep = s.report()["a"]
    assert rep["generated"] == 16  # 2 x target
    assert s.shortfalls() == {"a": 8 - rep["kept"]} and rep["shortfall"] > 0
    assert rep["drop_reasons"]["ink>0.08"] == 16 - rep["kept"]


def test_topup_disabled_when_filter_off():
    s = ShardScheduler(plan(), topup=False)
    assert len(drain(s, 0.0)) == 2


def test_requeue_puts_shard_back_first():
    s = ShardScheduler(plan())
    first = s.next_shard()
    s.requeue(first)
    assert s.next_shard() is first


def test_resume_skips_committed_and_keeps_counts():
    p = plan()
    committed = {p.shards[0].shard_id: {**summary(p.shards[0], 4), "end": 4}}
    s = ShardScheduler(p, committed)
    assert s.skipped == 1
    assert [sh.shard_id for sh in drain(s, 1.0)] == [p.shards[1].shard_id]
    assert s.report()["a"]["kept"] == 8


def test_bookkeeping_never_walks_the_queue_and_keeps_the_remaining_count():
    """Dispatch, requeue, completion and top-ups in random order: O(1) steps, exact running counts."""
    import random
    from collections import deque

    m = parse_manifest(
        {
            "name": "t",
            "entries": [
                {"id": f"e{i}", "label": "benign", "prompt": "p", "count": 10 + i, "size": 64}
                for i in range(6)
            ],
        }
    )
    s = ShardScheduler(plan_run(m, shard_size=4, cap_factor=3.0))

    class Guarded(deque):
        def __iter__(self):
            raise AssertionError("the scheduler walked its pending queue")

    s.pending = Guarded(s.pending)
    rng = random.Random(0)
    held = []
    steps = 0
    while not s.finished:
        steps += 1
        if held and (rng.random() < 0.5 or not s.pending):
            shard = held.pop(rng.randrange(len(held)))
            if rng.random() < 0.2:
                s.requeue(shard)
            else:
                s.complete(shard, summary(shard, int(len(shard) * 0.6)))
        elif (shard := s.next_shard()) is not None:
            held.append(shard)
        expected = sum(len(x) for x in deque.__iter__(s.pending)) + sum(len(x) for x in s.inflight.values())
        assert s.remaining_samples == expected
        assert {k: ep.pending for k, ep in s.entries.items()} == {
            k: sum(1 for x in deque.__iter__(s.pending) if x.entry_id == k) for k in s.entries
        }
    assert steps > 50 and not s.shortfalls()
