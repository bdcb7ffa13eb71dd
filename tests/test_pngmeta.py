import numpy as np

from dermgen.pngmeta import a1111_parameters, decode_png, encode_png, parse_a1111_parameters


def test_parameters_roundtrip_matches_web_ui_format(samples_dir):
    text = a1111_parameters(
        prompt="benign skin mole",
        negative_prompt="",
        steps=20,
        sampler="Euler a",
        cfg_scale=7.0,
        seed=1589873476,
        width=512,
        height=512,
        model_hash="8d72386f9b",
        model_name="derm-t2im",
    )
    assert text.startswith(
        "benign skin mole\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1589873476, "
        "Size: 512x512, Model hash: 8d72386f9b, Model: derm-t2im"
    )
    ours = parse_a1111_parameters(text)
    from PIL import Image

    theirs = parse_a1111_parameters(
        Image.open(samples_dir / "benign" / "00000-1589873476.png").info["parameters"]
    )
    for key in ("Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash"):
        assert ours[key] == theirs[key], key
    assert ours["prompt"] == theirs["prompt"] == "benign skin mole"


def test_png_is_lossless_and_carries_chunks():
    img = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    data = encode_png(img, "p\nSteps: 4", extra={"sample_id": "a-0000001"})
    pixels, text = decode_png(data)
    assert np.array_equal(pixels, img)
    assert text["parameters"] == "p\nSteps: 4" and '"sample_id": "a-0000001"' in text["dermgen"]


def test_loras_and_negative_prompt_in_parameters():
    text = a1111_parameters(
        prompt="p",
        negative_prompt="blurry",
        steps=4,
        sampler="PLMS",
        cfg_scale=6.5,
        seed=1,
        width=64,
        height=64,
        model_hash="abc",
        model_name="tiny",
        loras=[{"name": "derm", "sha256": "ff" * 32, "scale": 0.8}],
    )
    parsed = parse_a1111_parameters(text)
    assert parsed["negative_prompt"] == "blurry" and parsed["CFG scale"] == "6.5"
    assert parsed["Lora hashes"] == "derm: ffffffffffff" and parsed["Lora scales"] == "derm=0.8"
