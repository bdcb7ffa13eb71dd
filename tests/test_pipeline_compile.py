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
