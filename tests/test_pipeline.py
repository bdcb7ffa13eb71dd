import numpy as np
import pytest

from dermgen.errors import ConfigError
from dermgen.models import model_fingerprint, resolve_model
from dermgen.pipeline import LoraSpec, Renderer
from dermgen.samplers import SAMPLER_NAMES, make_scheduler

KW = dict(steps=4, cfg_scale=7.0, width=64, height=64)


@pytest.fixture(scope="module")
def renderer():
    return Renderer("tiny", batch_size=4, device="cpu")


def render(r, seeds, sampler="Euler a", prompt="benign mole"):
    return r.render([prompt] * len(seeds), [""] * len(seeds), seeds, sampler=sampler, **KW)


def test_tiny_preset_renders_64px_uint8(renderer):
    imgs = render(renderer, [1, 2, 3])
    assert imgs.shape == (3, 64, 64, 3) and imgs.dtype == np.uint8
    assert imgs.std() > 5  # not a blank frame
    assert renderer.identity.model_id == "tiny" and len(renderer.identity.sha256) == 64
    assert renderer.identity.short_hash == renderer.identity.sha256[:10]


def test_same_seed_and_batch_size_give_same_pixels(renderer):
    a, b = render(renderer, [7, 8]), render(renderer, [7, 8])
    assert np.array_equal(a, b)
    c = render(renderer, [9, 8])
    assert not np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1])  # one generator per image


def test_identity_is_the_same_in_every_process(renderer):
    again = Renderer("tiny", batch_size=1)
    assert again.identity.sha256 == renderer.identity.sha256


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_every_study_sampler_maps_to_a_scheduler(renderer, name):
    sched = make_scheduler(name, dict(renderer.pipe.scheduler.config))
    expected = {
        "Euler": "EulerDiscreteScheduler",
        "Euler a": "EulerAncestralDiscreteScheduler",
        "PLMS": "PNDMScheduler",
        "DDIM": "DDIMScheduler",
        "DPM++ 2M Karras": "DPMSolverMultistepScheduler",
    }
    assert type(sched).__name__ == expected[name]
    assert render(renderer, [1], sampler=name).shape == (1, 64, 64, 3)


def test_samplers_differ(renderer):
    assert not np.array_equal(render(renderer, [3], "Euler"), render(renderer, [3], "PLMS"))


def test_unknown_sampler_is_refused():
    with pytest.raises(ValueError, match="unknown sampler 'k_lms'"):
        make_scheduler("k_lms", {})


def test_lora_changes_output_and_scale_zero_is_the_base_model(renderer, tiny_lora):
    base = render(renderer, [1, 2])
    info = renderer.set_loras([LoraSpec(str(tiny_lora), 1.0)])
    with_lora = render(renderer, [1, 2])
    renderer.set_loras([LoraSpec(str(tiny_lora), 0.0)])
    zero = render(renderer, [1, 2])
    renderer.set_loras([])
    after = render(renderer, [1, 2])
    assert np.abs(with_lora.astype(int) - base).mean() > 1.0
    assert np.array_equal(zero, base) and np.array_equal(after, base)
    assert info[0]["sha256"] and info[0]["scale"] == 1.0


def test_fused_lora_matches_unfused(tiny_lora):
    fused = Renderer("tiny", batch_size=2, fuse_lora=True)
    unfused = Renderer("tiny", batch_size=2, fuse_lora=False)
    for r in (fused, unfused):
        r.set_loras([LoraSpec(str(tiny_lora), 0.7)])
    diff = np.abs(render(fused, [4, 5]).astype(int) - render(unfused, [4, 5]))
    assert diff.max() <= 2 and diff.mean() < 0.1


def test_lora_spec_parsing():
    assert LoraSpec.parse("a/b.safetensors:0.5") == LoraSpec("a/b.safetensors", 0.5)
    assert LoraSpec.parse("s3://bucket/x.safetensors") == LoraSpec("s3://bucket/x.safetensors", 1.0)
    with pytest.raises(ConfigError, match="out of range"):
        LoraSpec.parse("x.safetensors:3")


def test_model_references_are_checked_without_loading(tmp_path):
    assert model_fingerprint("tiny").startswith("tiny:")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model(str(tmp_path / "missing.safetensors"))
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not really")
    with pytest.raises(ConfigError, match="pickled checkpoint"):
        resolve_model(str(ckpt))
    assert resolve_model(str(ckpt), allow_pickle=True).kind == "single_file"
    st = tmp_path / "m.safetensors"
    st.write_bytes(b"x")
    assert model_fingerprint(str(st)).startswith("sha256:")


def test_batch_padding_keeps_shapes(renderer):
    one = render(renderer, [11])
    four = render(renderer, [11, 12, 13, 14])
    assert one.shape[0] == 1 and np.array_equal(one[0], four[0])  # always padded to batch_size


def test_channels_last_matches_the_plain_layout_within_one_level():
    plain = Renderer("tiny", batch_size=2, channels_last=False)
    fast = Renderer("tiny", batch_size=2, channels_last=True)
    diff = np.abs(render(plain, [21, 22]).astype(int) - render(fast, [21, 22]))
    assert diff.max() <= 1  # stated tolerance of the optimised path: one uint8 level


def test_cuda_graphs_are_refused_on_a_cpu_before_loading():
    with pytest.raises(ConfigError, match="--cuda-graphs: CUDA graphs need a CUDA device"):
        Renderer("tiny", device="cpu", cuda_graphs=True)


def test_compiled_unet_matches_eager_within_one_level():
    """torch.compile (inductor, ~30 s to compile on one core) keeps the stated tolerance of one level."""
    eager = Renderer("tiny", batch_size=2, device="cpu")
    compiled = Renderer("tiny", batch_size=2, device="cpu", compile=True)
    # compiled in place: still the diffusers model (LoRA calls reach it), with a compiled call
    assert type(compiled.pipe.unet).__name__ == "UNet2DConditionModel"
    assert compiled.pipe.unet._compiled_call_impl is not None
    kw = dict(KW, steps=2)
    a = eager.render(["benign mole"] * 2, ["", ""], [31, 32], sampler="Euler", **kw)
    b = compiled.render(["benign mole"] * 2, ["", ""], [31, 32], sampler="Euler", **kw)
    assert np.abs(a.astype(int) - b).max() <= 1


def test_cuda_graph_steps_are_marked_once_per_denoising_step(monkeypatch):
    """With CUDA graphs, every step begins a new graph step (checked on the CPU by counting the marks)."""
    import torch

    r = Renderer("tiny", batch_size=2, device="cpu")
    r.cuda_graphs = True  # the marking alone; capturing graphs needs a GPU
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    r.render(["benign mole"], [""], [5], sampler="Euler", steps=3, cfg_scale=7.0, width=64, height=64)
    assert len(marks) == 1 + 3


def test_with_cuda_graphs_plms_without_guidance_keeps_copies_of_the_unet_output(monkeypatch):
    """CFG 1 passes the UNet's (CUDA-graph) output straight to PLMS, which keeps it in its history; the next
    replay would overwrite it. With --cuda-graphs the scheduler works on a copy (shown on the CPU by storage)."""
    import torch

    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)
    kw = dict(sampler="PLMS", steps=3, cfg_scale=1.0, width=64, height=64)
    pixels, shared = {}, {}
    for graphs in (False, True):
        r = Renderer("tiny", batch_size=1, device="cpu")
        r.cuda_graphs = graphs  # the copying alone; capturing graphs needs a GPU
        outputs = []
        r.pipe.unet.register_forward_hook(lambda m, a, out, kept=outputs: kept.append(out[0]))
        pixels[graphs] = r.render(["benign mole"], [""], [5], **kw)
        ptrs = {o.untyped_storage().data_ptr() for o in outputs}
        ets = r.pipe.scheduler.ets
        shared[graphs] = sum(e.untyped_storage().data_ptr() in ptrs for e in ets)
        assert len(ets) >= 2
    assert shared[False] > 0  # without copying, PLMS holds the UNet's own output tensors
    assert shared[True] == 0
    assert np.array_equal(pixels[False], pixels[True])
