"""Plan versions: v1 (blocks of 8 from each entry's index 0, CPU noise) stays for existing runs; v2 (blocks
of the batch size from each shard's start, device noise) is the default for new runs and gives full batches."""

import json

import pytest

from dermgen.config import REPO_ROOT, make_config
from dermgen.errors import PlanMismatchError
from dermgen.manifest import load_manifest
from dermgen.plan import batches, plan_run
from dermgen.run import prepare_run
from dermgen.shards import RUN_JSON

MANIFEST_6K = REPO_ROOT / "manifests" / "derm_t2im_6k.yaml"


def batch_sizes(plan, batch_size):
    return [len(b) for shard in plan.shards for b in batches(shard, batch_size)]


@pytest.mark.parametrize("batch_size", [8, 16])
def test_v2_renders_the_6k_manifest_in_full_batches_except_at_shard_tails(batch_size):
    manifest = load_manifest(MANIFEST_6K)
    v1 = batch_sizes(plan_run(manifest), batch_size)
    v2_plan = plan_run(manifest, block=batch_size, version=2)
    v2 = batch_sizes(v2_plan, batch_size)
    assert sum(v1) == sum(v2) == 6000
    # v2: a shard of 64 is 64 / batch_size full batches; only an entry's last (shorter) shard has a tail
    last_shard = {shard.entry_id: shard.shard_id for shard in v2_plan.shards}
    for shard in v2_plan.shards:
        sizes = [len(b) for b in batches(shard, batch_size)]
        partial = [n for n in sizes if n < batch_size]
        assert len(partial) <= 1 and (not partial or shard.shard_id == last_shard[shard.entry_id]), sizes
    assert len(v2) == sum(-(-len(shard) // batch_size) for shard in v2_plan.shards)
    if batch_size == 16:  # v1 draws per 8 samples: at batch 16 most batches are half full
        assert sum(n < batch_size for n in v1) > len(v1) // 2


def test_v2_keeps_every_sampler_and_step_count_in_use():
    plan = plan_run(load_manifest(MANIFEST_6K), block=16, version=2)
    samples = [s for shard in plan.shards for s in shard.samples]
    assert {s.sampler for s in samples} == {"Euler", "Euler a", "PLMS"}
    assert {s.steps for s in samples} == set(range(20, 27))
    again = plan_run(load_manifest(MANIFEST_6K), block=16, version=2)
    assert [s for sh in again.shards for s in sh.samples] == samples  # deterministic


def _config(out, **kw):
    return make_config(model="tiny", manifest="manifests/smoke.yaml", output=str(out), filter="none", **kw)


def test_new_runs_are_v2_with_device_noise_and_record_it(tmp_path):
    run = prepare_run(_config(tmp_path, batch_size=4))
    assert run.plan.version == 2 and run.plan.block == 4
    assert run.binding["plan_version"] == 2 and run.binding["block"] == 4
    assert run.worker_options.noise == "device"
    assert json.loads((tmp_path / RUN_JSON).read_text())["plan_version"] == 2


def test_a_v1_run_resumes_as_v1(tmp_path):
    first = prepare_run(_config(tmp_path, plan_version=1))
    assert "plan_version" not in first.binding and first.binding["block"] == 8  # as before versions existed
    assert first.worker_options.noise == "cpu"
    again = prepare_run(_config(tmp_path, batch_size=4))  # nothing said: keeps the run's own plan
    assert again.plan.version == 1 and again.binding == first.binding and again.run_id == first.run_id
    assert [s.shard_id for s in again.plan.shards] == [s.shard_id for s in first.plan.shards]
    assert again.worker_options.noise == "cpu"
    with pytest.raises(PlanMismatchError, match="plan_version"):
        prepare_run(_config(tmp_path, plan_version=2))


def test_a_v1_run_written_before_the_noise_column_resumes_verifies_and_loads(tmp_path):
    """Shards committed before the later columns (noise, skin_tone, prompt tokens) and the `ita` score existed:
    the resumed v1 run still verifies and loads, with nulls where they are missing."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from support import generate_run

    from dermgen.data.runs import open_run
    from dermgen.rundir import RunDir
    from dermgen.schema import LATER_COLUMNS, LATER_SCORES, SHARD_SCHEMA
    from dermgen.store import open_store
    from dermgen.verify import verify_run

    out = tmp_path / "run"
    generate_run(out, limit=8, plan_version=1)
    shards = sorted((out / "shards").glob("*.parquet"))
    first, second = shards[:2]
    table = pq.read_table(first).drop_columns(list(LATER_COLUMNS))  # as written before these columns
    scores = table.column("scores").combine_chunks()
    old_scores = pa.StructArray.from_arrays(
        [scores.field(f.name) for f in scores.type if f.name not in LATER_SCORES],
        fields=[f for f in scores.type if f.name not in LATER_SCORES],
    )
    table = table.set_column(table.schema.get_field_index("scores"), "scores", old_scores)
    pq.write_table(table, first)
    second.unlink()  # not committed yet: the resumed run renders it
    summary = generate_run(out, limit=8)  # no version given: resumes as v1
    assert summary["resumed_shards"] == len(shards) - 1
    report = verify_run(open_store(str(out)))
    assert report.problems == [] and report.rows == 8
    run = open_run(str(out))
    rows = [r for sid in run.shard_ids for r in run.read_metadata(sid)[0]]
    assert len(rows) == 8 and {r["noise"] for r in rows} == {None, "cpu"}
    old = RunDir(str(out)).read_shard(first.stem)  # the run's reader gives the current schema, nulls added
    assert old.schema.equals(SHARD_SCHEMA, check_metadata=False)  # `scores` has `ita` again (null)
    assert old.column("skin_tone").null_count == old.num_rows
