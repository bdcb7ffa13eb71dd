"""Single-file (original LDM layout) SD 1.x checkpoints load offline, map every weight, and fail clearly.

A real single-file checkpoint is written here from the tiny model (tests/ldm_convert.py); loading it must give
the tiny preset's pixels. The packaged SD 1.5 configs are checked on the meta device (no 4 GB download).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from dermgen.errors import ConfigError
from dermgen.models import DERM_T2IM_ENV, resolve_model
from dermgen.pipeline import Renderer
from dermgen.single_file import (
    SD15_CONFIG_DIR,
    V1_INFERENCE_YAML,
    a1111_legacy_hash,
    a1111_short_hash,
    inspect_single_file,
    load_single_file,
    read_original_config,
)

sys.path.insert(0, str(Path(__file__).parent))
from ldm_convert import ldm_state_dict, write_ldm_checkpoint  # noqa: E402

KW = dict(steps=4, cfg_scale=7.0, width=64, height=64)
TOKENIZER = SD15_CONFIG_DIR / "tokenizer"
# Token ids of the SD 1.x (CLIP ViT-L/14) tokenizer, computed with CLIP's reference SimpleTokenizer
# (open_clip's copy of OpenAI's code); "a photo of a cat" is the widely published example.
# fmt: off
KNOWN_IDS = {
    "benign skin mole": [49406, 1465, 2326, 3575, 23529, 49407],
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "Malignant mole on neck": [49406, 41122, 773, 23529, 525, 6906, 49407],
    "small benign skin mole on centre of right hand":
        [49406, 2442, 1465, 2326, 3575, 23529, 525, 2916, 539, 1155, 2463, 49407],
}
# fmt: on


@pytest.fixture
def no_network(monkeypatch):
    """Any name lookup or connection outside loopback fails the test (the hub must never be contacted)."""
    loopback = ("127.0.0.1", "::1", "localhost")
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if host not in loopback and host is not None:
            raise OSError(f"network access attempted in an offline test: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        if self.family != socket.AF_UNIX and address[0] not in loopback:
            raise OSError(f"network access attempted in an offline test: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """tiny.safetensors (LDM layout) + tiny.yaml + tiny.config/ (the configs an LDM yaml does not hold)."""
    from dermgen.tiny import tiny_components

    d = tmp_path_factory.mktemp("single_file")
    return write_ldm_checkpoint(tiny_components(), d / "tiny.safetensors", config_dir=d / "tiny.config")


@pytest.fixture(scope="module")
def tiny_renderer():
    return Renderer("tiny", device="cpu", batch_size=2)


def render(r, seeds, sampler="Euler a", prompt="benign skin mole"):
    return r.render([prompt] * len(seeds), [""] * len(seeds), seeds, sampler=sampler, **KW)


def copy_ckpt(src: Path, dst_dir: Path, *, config: bool = True, name: str = "model") -> Path:
    dst = dst_dir / f"{name}.safetensors"
    shutil.copyfile(src, dst)
    shutil.copyfile(src.with_suffix(".yaml"), dst.with_suffix(".yaml"))
    if config:
        shutil.copytree(src.with_name(src.stem + ".config"), dst.with_name(f"{name}.config"))
    return dst


# -- tokenizer -------------------------------------------------------------------------------------------


def test_packaged_tokenizer_gives_the_sd15_token_ids():
    from transformers import CLIPTokenizer

    from_files = CLIPTokenizer(str(TOKENIZER / "vocab.json"), str(TOKENIZER / "merges.txt"))
    from_folder = CLIPTokenizer.from_pretrained(
        str(SD15_CONFIG_DIR), subfolder="tokenizer", local_files_only=True
    )
    for tok in (from_files, from_folder):
        assert len(tok) == 49408
        for text, ids in KNOWN_IDS.items():
            assert tok(text).input_ids == ids, text
    padded = from_folder("benign skin mole", padding="max_length", max_length=77).input_ids
    assert from_folder.model_max_length == 77 and padded[6:] == [49407] * 71


def test_committed_vocab_is_what_make_tokenizer_builds_from_the_merges():
    from dermgen.configs.make_tokenizer import N_MERGES, build_vocab

    lines = (TOKENIZER / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert lines[0] == "#version: 0.2" and lines[-1] == ""
    merges = [tuple(line.split(" ")) for line in lines[1:-1]]
    assert len(merges) == N_MERGES
    vocab = json.loads((TOKENIZER / "vocab.json").read_text(encoding="utf-8"))
    assert vocab == build_vocab(merges)
    assert vocab["!"] == 0 and vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    # committed package data stays small (sizes of the Hugging Face CLIP ViT-L/14 files)
    assert (TOKENIZER / "vocab.json").stat().st_size == 961143
    assert (TOKENIZER / "merges.txt").stat().st_size == 524619


# -- packaged SD 1.5 configs -----------------------------------------------------------------------------


def test_packaged_configs_build_full_size_sd15_models_on_meta():
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    d = str(SD15_CONFIG_DIR)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(d, subfolder="unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(d, subfolder="vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(d, subfolder="text_encoder"))
    counts = [sum(p.numel() for p in m.parameters()) for m in (unet, vae, text)]
    assert counts == [859_520_964, 83_653_863, 123_060_480]
    assert all(p.device.type == "meta" for p in unet.parameters())
    assert text.config.hidden_act == "quick_gelu" and vae.config.scaling_factor == 0.18215
    sched = PNDMScheduler.from_pretrained(d, subfolder="scheduler")
    assert sched.config.skip_prk_steps and sched.config.steps_offset == 1
    assert float(sched.betas[0]) == pytest.approx(0.00085) and float(sched.betas[-1]) == pytest.approx(0.012)


def test_v1_inference_yaml_describes_the_packaged_unet_and_vae():
    """diffusers builds the UNet/VAE from the yaml; it must agree with the packaged diffusers configs."""
    from diffusers.loaders.single_file_utils import (
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )

    original = read_original_config(V1_INFERENCE_YAML)
    for name, fn in (
        ("unet", create_unet_diffusers_config_from_ldm),
        ("vae", create_vae_diffusers_config_from_ldm),
    ):
        from_yaml = fn(original, {})
        packaged = json.loads((SD15_CONFIG_DIR / name / "config.json").read_text())
        shared = [k for k in from_yaml if k in packaged]
        assert {"block_out_channels", "down_block_types", "up_block_types", "layers_per_block"} <= set(shared)
        for key in shared:
            got = list(from_yaml[key]) if isinstance(from_yaml[key], tuple) else from_yaml[key]
            assert got == packaged[key], (name, key)


def test_a_full_size_sd15_layout_passes_the_checks_and_maps_back_completely(tmp_path):
    """Write the header of a 4.27 GB SD 1.5 file (sparse, no weights) in the LDM layout and check it."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    d = str(SD15_CONFIG_DIR)
    with torch.device("meta"):
        comps = {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(d, subfolder="unet")),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(d, subfolder="vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(d, subfolder="text_encoder")),
        }
    comps["scheduler"] = PNDMScheduler.from_pretrained(d, subfolder="scheduler")
    state = ldm_state_dict(comps)
    # names every real SD 1.x file has (diffusers detects v1 by the first; A1111 files carry the others)
    for key, shape in {
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.middle_block.1.proj_in.weight": (1280, 1280, 1, 1),
        "first_stage_model.decoder.up.3.block.0.conv1.weight": (512, 512, 3, 3),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
    }.items():
        assert tuple(state[key].shape) == shape, key

    header, offset = {}, 0
    for key, t in state.items():
        n = t.numel() * t.element_size()
        header[key] = {
            "dtype": "F32" if t.dtype == torch.float32 else "I64",
            "shape": list(t.shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    raw = json.dumps(header).encode()
    path = tmp_path / "sd15.safetensors"
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + offset)  # sparse: the size of an fp32 SD 1.5 file without EMA weights
    assert 4.26e9 < path.stat().st_size < 4.28e9  # Derm-T2IM.safetensors is 4.27 GB: fp32, no EMA
    plan = inspect_single_file(path)  # every pre-load check, with the packaged yaml and sd15 folder
    assert (plan.original_config, plan.config_dir) == (V1_INFERENCE_YAML, SD15_CONFIG_DIR)
    assert len(plan.header.shapes) == len(state)

    unet_cfg = comps["unet"].config
    back = convert_ldm_unet_checkpoint(state, dict(unet_cfg))
    assert set(back) == set(comps["unet"].state_dict())
    back = convert_ldm_vae_checkpoint(state, dict(comps["vae"].config))
    assert set(back) == set(comps["vae"].state_dict())


# -- loading a real single-file checkpoint ---------------------------------------------------------------


def test_single_file_checkpoint_renders_the_tiny_presets_pixels(tiny_ckpt, tiny_renderer, no_network):
    r = Renderer(str(tiny_ckpt), device="cpu", batch_size=2)
    for sampler in ("Euler a", "PLMS"):
        a, b = render(r, [3, 4], sampler), render(tiny_renderer, [3, 4], sampler)
        assert a.std() > 5
        assert np.abs(a.astype(int) - b).max() <= 1, sampler
    sha = hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()
    assert r.identity.kind == "single_file" and r.identity.sha256 == sha
    assert r.identity.short_hash == a1111_short_hash(tiny_ckpt) == sha[:10]


def test_every_weight_lands_in_its_place(tmp_path, no_network):
    """Round trip with every tensor made unique (norms too, which are all ones in a fresh model)."""
    import torch

    from dermgen.tiny import tiny_components

    comps = tiny_components()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in ("unet", "vae", "text_encoder"):
            for p in comps[name].parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 1e-3)
    ckpt = write_ldm_checkpoint(comps, tmp_path / "m.safetensors", config_dir=tmp_path / "m.config")
    pipe = load_single_file(ckpt)
    for name in ("unet", "vae", "text_encoder"):
        want, got = comps[name].state_dict(), getattr(pipe, name).state_dict()
        assert set(got) == set(want), name
        bad = [k for k in want if not torch.equal(got[k], want[k])]
        assert not bad, (name, bad[:5])


def test_pickled_checkpoint_loads_only_when_allowed(tiny_ckpt, tmp_path, no_network):
    import torch
    from safetensors.torch import load_file

    ckpt = copy_ckpt(tiny_ckpt, tmp_path)
    pickled = ckpt.with_suffix(".ckpt")
    torch.save({"state_dict": load_file(str(ckpt))}, pickled)  # the web UI layout: weights under state_dict
    ckpt.unlink()
    with pytest.raises(ConfigError, match="pickled checkpoint"):
        Renderer(str(pickled), device="cpu", batch_size=1)
    r = Renderer(str(pickled), device="cpu", batch_size=1, allow_pickle=True)
    assert (
        list(r.pipe.unet.config.block_out_channels) == [32, 64] and r.pipe.text_encoder.device.type == "cpu"
    )


def test_original_config_beside_the_checkpoint_is_used(tiny_ckpt, tmp_path, no_network):
    """tiny.yaml (not the packaged v1-inference.yaml) sizes the UNet; with the packaged one it is refused."""
    ckpt = copy_ckpt(tiny_ckpt, tmp_path)
    pipe = load_single_file(ckpt)
    assert list(pipe.unet.config.block_out_channels) == [32, 64]
    ckpt.with_suffix(".yaml").unlink()
    with pytest.raises(ConfigError, match=r"UNet width 32, its config expects model_channels=320"):
        load_single_file(ckpt)


def test_sd15_configs_refuse_a_checkpoint_of_other_sizes(tiny_ckpt, tmp_path, no_network):
    ckpt = copy_ckpt(tiny_ckpt, tmp_path, config=False)  # tiny.yaml but no tiny.config/: packaged sd15
    with pytest.raises(ConfigError, match=r"text encoder of width 32 .* expects width 768 with 49408 tokens"):
        Renderer(str(ckpt), device="cpu", batch_size=1)


def test_missing_weights_are_refused_not_left_uninitialised(tiny_ckpt, tmp_path, no_network):
    from safetensors.torch import load_file, save_file

    ckpt = copy_ckpt(tiny_ckpt, tmp_path)
    state = load_file(str(ckpt))
    del state["first_stage_model.decoder.conv_out.weight"]
    save_file(state, str(ckpt))
    with pytest.raises(ConfigError, match=r"lacks 1 vae weight"):
        load_single_file(ckpt)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", r"is truncated: \d+ bytes on disk, the header announces \d+"),
        ("lfs", r"is a Git LFS pointer file"),
        ("garbage", r"not a valid safetensors file"),
        ("sd2", r"Stable Diffusion 2.x checkpoint \(OpenCLIP"),
        ("sdxl", r"SDXL checkpoint"),
        ("vae_only", r"no UNet weights .* standalone VAE"),
        ("bad_yaml", r"is not a Stable Diffusion \(LDM\) inference config"),
        ("yaml_z8", r"has \d+ vae weight\(s\) of the wrong shape \(e.g. encoder.conv_out.weight"),
    ],
)
def test_unusable_files_fail_with_the_reason(tiny_ckpt, tmp_path, damage, message, no_network):
    import torch
    import yaml
    from safetensors.torch import save_file

    ckpt = copy_ckpt(tiny_ckpt, tmp_path)
    data = ckpt.read_bytes()
    if damage == "truncate":
        ckpt.write_bytes(data[: len(data) // 2])
    elif damage == "lfs":
        ckpt.write_text(
            "version https://git-lfs.github.com/spec/v1\noid sha256:8d72386f9b\nsize 4265146304\n"
        )
    elif damage == "garbage":
        ckpt.write_bytes(b"<html>404 Not Found</html>" * 10)
    elif damage in ("sd2", "sdxl", "vae_only"):
        key = {
            "sd2": "cond_stage_model.model.token_embedding.weight",
            "sdxl": "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight",
            "vae_only": "encoder.conv_in.weight",
        }[damage]
        tensors = {key: torch.zeros(2, 2), "decoder.conv_out.weight": torch.zeros(2, 2)}
        if damage != "vae_only":
            tensors["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(320, 4, 3, 3)
        save_file(tensors, str(ckpt))
    elif damage == "bad_yaml":
        ckpt.with_suffix(".yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")
    elif damage == "yaml_z8":  # a yaml that does not describe this checkpoint's VAE
        cfg = yaml.safe_load(ckpt.with_suffix(".yaml").read_text())
        cfg["model"]["params"]["first_stage_config"]["params"]["ddconfig"]["z_channels"] = 8
        ckpt.with_suffix(".yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=message) as info:
        Renderer(str(ckpt), device="cpu", batch_size=1)
    assert str(ckpt) in str(info.value) or damage == "bad_yaml"  # the yaml error names the yaml


def test_a_lora_given_as_the_model_is_pointed_to_lora(tiny_lora, tmp_path, no_network):
    with pytest.raises(ConfigError, match=r"LoRA adapter: pass it with --lora"):
        load_single_file(tiny_lora)


def test_resolve_model_refuses_missing_and_pickled_files(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist; expected a preset"):
        resolve_model(str(tmp_path / "Derm-T2IM.safetensors"))
    ckpt = tmp_path / "Derm-T2IM.ckpt"
    ckpt.write_bytes(b"not really a pickle")
    with pytest.raises(ConfigError, match=r"pickled checkpoint.*--allow-pickle"):
        resolve_model(str(ckpt))
    assert resolve_model(str(ckpt), allow_pickle=True).kind == "single_file"


def test_env_var_points_the_derm_t2im_preset_at_a_local_file(tiny_ckpt, tmp_path, monkeypatch, no_network):
    """DERMGEN_DERM_T2IM=/path/Derm-T2IM.safetensors: `dermgen generate --model derm-t2im` uses that file."""
    import pyarrow.parquet as pq

    from dermgen.cli import main

    ckpt = copy_ckpt(tiny_ckpt, tmp_path, name="Derm-T2IM")
    monkeypatch.setenv(DERM_T2IM_ENV, str(ckpt))
    monkeypatch.setenv("DERMGEN_CACHE", str(tmp_path / "cache"))
    resolved = resolve_model("derm-t2im")
    assert (resolved.model_id, resolved.kind, resolved.path) == ("derm-t2im", "single_file", str(ckpt))

    out = tmp_path / "run"
    rc = main(
        [
            "generate",
            "--manifest",
            "manifests/smoke.yaml",
            "--model",
            "derm-t2im",
            "--limit",
            "2",
            "--size",
            "64",
            "--filter",
            "none",
            "--no-ray",
            "--device",
            "cpu",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    rows = pq.read_table(
        next((out / "shards").glob("*.parquet")), columns=["model_id", "model_sha256"]
    ).to_pylist()
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert rows and all(r == {"model_id": "derm-t2im", "model_sha256": sha} for r in rows)


# -- web UI hashes ---------------------------------------------------------------------------------------


def test_a1111_hashes(tmp_path):
    window = bytes(range(256)) * 256  # the 64 KiB the old hash reads, at offset 1 MiB
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"\0" * 0x100000 + window + b"tail")
    legacy, short = a1111_legacy_hash(f), a1111_short_hash(f)
    assert legacy == hashlib.sha256(window).hexdigest()[:8]
    assert short == hashlib.sha256(f.read_bytes()).hexdigest()[:10]
    f.write_bytes(b"\1" * 0x100000 + window + b"other tail")  # outside the window: only the new hash moves
    assert a1111_legacy_hash(f) == legacy and a1111_short_hash(f) != short
