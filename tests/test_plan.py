from dermgen.manifest import parse_manifest
from dermgen.plan import batches, limit_counts, plan_run


def manifest(counts=(10, 7), samplers=("Euler", "Euler a", "PLMS"), steps="20-26"):
    return parse_manifest(
        {
            "name": "t",
            "defaults": {"samplers": list(samplers), "steps": steps, "size": 64},
            "entries": [
                {
                    "id": f"e{i}",
                    "label": "benign" if i % 2 == 0 else "malignant",
                    "prompt": f"p{i}",
                    "count": c,
                }
                for i, c in enumerate(counts)
            ],
        }
    )


def test_plan_is_deterministic_and_complete():
    m = manifest()
    p1 = plan_run(m, run_seed=5, shard_size=4)
    p2 = plan_run(manifest(), run_seed=5, shard_size=4)
    s1 = [s for sh in p1.shards for s in sh.samples]
    s2 = [s for sh in p2.shards for s in sh.samples]
    assert s1 == s2
    assert len(s1) == 17 and len({s.sample_id for s in s1}) == 17
    assert [sh.shard_id for sh in p1.shards][:3] == [
        "e0-0000000-0000004",
        "e0-0000004-0000008",
        "e0-0000008-0000010",
    ]
    assert s1[0].sample_id == "e0-0000000"


def test_run_seed_changes_seeds_and_seeds_are_consecutive():
    a = [s.seed for s in plan_run(manifest(), run_seed=1).shards[0].samples]
    b = [s.seed for s in plan_run(manifest(), run_seed=2).shards[0].samples]
    assert a != b
    assert a == list(range(a[0], a[0] + len(a)))  # seed, seed+1, ... as in the study


def test_explicit_seed_base_reproduces_given_seeds():
    m = parse_manifest(
        {
            "name": "t",
            "entries": [{"id": "a", "label": "benign", "prompt": "p", "count": 3, "seed_base": 1589873476}],
        }
    )
    assert [s.seed for s in plan_run(m).shards[0].samples] == [1589873476, 1589873477, 1589873478]


def test_sampler_and_steps_vary_per_block_and_stay_in_range():
    p = plan_run(manifest(counts=(200,)), block=8, shard_size=64)
    samples = [s for sh in p.shards for s in sh.samples]
    assert {s.sampler for s in samples} == {"Euler", "Euler a", "PLMS"}
    assert {s.steps for s in samples} <= set(range(20, 27)) and len({s.steps for s in samples}) > 3
    for i in range(0, 200, 8):  # each aligned block shares one batch key
        assert len({s.batch_key for s in samples[i : i + 8]}) == 1


def test_shard_size_does_not_change_samples():
    a = {s.sample_id: s for sh in plan_run(manifest(), shard_size=3).shards for s in sh.samples}
    b = {s.sample_id: s for sh in plan_run(manifest(), shard_size=64).shards for s in sh.samples}
    assert a == b


def test_limit_splits_in_proportion_with_every_entry_present():
    m = parse_manifest(
        {
            "name": "t",
            "entries": [
                {"id": "a", "label": "benign", "prompt": "p", "count": 1000},
                {"id": "b", "label": "benign", "prompt": "p", "count": 500},
                {"id": "c", "label": "malignant", "prompt": "p", "count": 1500},
            ],
        }
    )
    assert limit_counts(m, 30) == {"a": 10, "b": 5, "c": 15}
    small = limit_counts(m, 4)
    assert sum(small.values()) == 4 and min(small.values()) >= 1
    assert limit_counts(m, None) == {"a": 1000, "b": 500, "c": 1500}


def test_batches_are_homogeneous_and_cover_the_shard():
    shard = plan_run(manifest(counts=(64,)), shard_size=64, block=8).shards[0]
    seen = []
    for b in batches(shard, 5):
        assert len(b) <= 5 and len({s.batch_key for s in b}) == 1
        seen += [s.sample_id for s in b]
    assert sorted(seen) == sorted(s.sample_id for s in shard.samples)


def test_topup_shards_continue_after_target_and_stop_at_cap():
    p = plan_run(manifest(counts=(10,)), shard_size=4, cap_factor=2.0)
    t1 = p.topup_shard("e0", 10)
    assert t1.start == 10 and t1.topup and t1.samples[0].sample_id == "e0-0000010"
    assert p.topup_shard("e0", 20) is None  # cap = 2 x 10
    last = p.topup_shard("e0", 18)
    assert last.end == 20
