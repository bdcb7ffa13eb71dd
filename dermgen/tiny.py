"""The `tiny` model preset: a Stable Diffusion 1.x pipeline with random weights built from small configs.

Same classes and code path as the real model, no network, runs on a CPU in milliseconds. Weights are
seeded, so every process builds the same model (and the same model fingerprint).
"""

from __future__ import annotations

import string

TINY_SEED = 0
TINY_DEFAULT_SIZE = 64

TINY_UNET_CONFIG = {
    "sample_size": TINY_DEFAULT_SIZE // 8,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (32, 64),
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}

_WORDS = (
    "benign malignant skin mole moles lesion small tiny large multiple on of the centre center "
    "right left hand neck back arm leg face light dark medium brown skin-tone"
)


def tiny_tokenizer():
    """A CLIP BPE tokenizer over a generated vocabulary: characters plus merges for the study's words."""
    from transformers import CLIPTokenizer

    chars = list(string.ascii_lowercase + string.digits + ".,-'!:;()")
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in sorted(set(_WORDS.split())):
        # merge left to right: w o r d</w>  ->  wo r d</w> -> wor d</w> -> word</w>
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            merged = pair[0] + pair[1]
            if pair not in merges:
                merges.append(pair)
            if merged not in vocab:
                vocab[merged] = len(vocab)
            pieces = [merged] + pieces[2:]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def tiny_components(seed: int = TINY_SEED) -> dict:
    """UNet, VAE, text encoder, tokenizer and scheduler of the tiny model (random, seeded weights).

    Channels are >= 32 so the same architecture can be written as an original LDM config
    (GroupNorm(32) is hard-coded there). The VAE downsamples 8x like SD 1.x.
    """
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=TINY_DEFAULT_SIZE,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            layer_norm_eps=1e-5,
        )
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
    )
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def build_tiny_pipeline(seed: int = TINY_SEED):
    """A StableDiffusionPipeline with the tiny components and no safety checker."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        **tiny_components(seed),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
