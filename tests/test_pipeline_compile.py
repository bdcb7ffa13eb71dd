"""torch.compile on the CPU: LoRA with a compiled UNet, and no recompiles across samplers after warm-up.

Compiling the tiny UNet takes 30-50 s on this machine, so these tests share one compiled renderer and
render at 64 px with 2 steps.
"""

import numpy as np
import pytest

from dermgen.pipeline import LoraSpec, Renderer

KW = dict(steps=2, cfg_scale=7.0, width=64, height=64)
SEEDS = [41, 42]
# The compiled UNet's stated tolerance against the eager one: one uint8 level (inductor reorders float sums).
TOLERANCE = 1

pytestmark = pytest.mark.slow


def render(r, sampler="Euler"):
    return r.render(["benign mole"] * 2, ["", ""], SEEDS, sampler=sampler, **KW).astype(int)


@pytest.fixture(scope="module")
def compiled():
    return Renderer("tiny", batch_size=2, device="cpu", compile=True)


def test_lora_on_a_compiled_unet_matches_the_eager_fused_path(compiled, tiny_lora):
    eager = Renderer("tiny", batch_size=2, device="cpu")
    base_eager = render(eager)
    eager.set_loras([LoraSpec(str(tiny_lora), 0.7)])
    lora_eager = render(eager)

    base = render(compiled)
    info = compiled.set_loras([LoraSpec(str(tiny_lora), 0.7)])
    with_lora = render(compiled)
    compiled.set_loras([LoraSpec(str(tiny_lora), 0.0)])
    zero = render(compiled)
    compiled.set_loras([])
    after = render(compiled)

    assert info[0]["scale"] == 0.7 and info[0]["sha256"]
    assert np.abs(lora_eager - base_eager).mean() > 1.0  # the adapter changes the pixels
    assert np.abs(with_lora - lora_eager).max() <= TOLERANCE
    assert np.abs(base - base_eager).max() <= TOLERANCE
    assert np.abs(zero - base).max() <= TOLERANCE  # scale 0 is the base model
    assert np.array_equal(after, base)  # set_loras([]) restores the base weights exactly


def test_no_recompiles_after_warm_up_across_a_plan_with_three_samplers(tmp_path):
    """Euler / Euler a give float32 timesteps, PLMS int64: the warm-up compiles both graphs, so no sampler
    of the plan compiles mid-shard (counted with torch's own compile counters)."""
    from torch._dynamo.utils import counters

    from dermgen.manifest import parse_manifest
    from dermgen.plan import plan_run
    from dermgen.run import warmup_samplers
    from dermgen.worker import ShardWorker, WorkerOptions

    entry = {
        "id": "mole",
        "label": "benign",
        "prompt": "benign mole",
        "count": 12,
        "steps": "2-3",
        "size": 64,
    }
    entry["samplers"] = ["Euler", "Euler a", "PLMS"]
    manifest = parse_manifest({"name": "t", "entries": [entry]})
    plans = (plan_run(manifest, run_seed=seed, shard_size=12, block=2) for seed in range(100))
    plan = next(p for p in plans if len({s.sampler for s in p.shards[0].samples}) == 3)  # all three used
    opts = WorkerOptions(
        model="tiny",
        filter="none",
        batch_size=2,
        device="cpu",
        compile=True,
        warmup_size=(64, 64),
        warmup_samplers=warmup_samplers(plan),
    )
    before = counters["stats"]["unique_graphs"]
    worker = ShardWorker(opts, str(tmp_path), "r")
    after_warm_up = counters["stats"]["unique_graphs"]
    try:
        summary = worker.run_shard(plan.shards[0])
    finally:
        worker.close()
    assert summary["ok"] == 12
    assert after_warm_up > before  # the counter counts this UNet's compiles
    assert counters["stats"]["unique_graphs"] == after_warm_up  # none after the warm-up
