"""Token counts: the ASCII fast path (pieces and byte-pair merges from merges.txt) equals the tokenizer."""

from __future__ import annotations

import random
import string
from pathlib import Path

import yaml

from dermgen import prompts

REPO = Path(__file__).resolve().parent.parent


def _texts() -> list[str]:
    texts = []
    for path in sorted((REPO / "manifests").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        for e in doc.get("entries", []):
            texts += [e.get("prompt") or "", e.get("negative_prompt") or ""]
        texts.append((doc.get("defaults") or {}).get("negative_prompt") or "")
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.digits + " '.,-!?()[]{}:;\"/\\_*&^%$#@~`+=<>|"
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(1500)]
    merges = (prompts.TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").split()[2:]
    words = [w.replace("</w>", "") for w in merges if w.isascii() and w.replace("</w>", "")]
    texts += [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(1500)]
    texts += ["it's they're we've I'm you'll he'd ''s 'st", "aaaaaaaaaaaaaaaa", "Fitzpatrick VI, 3mm"]
    return [t for t in texts if t and "<|" not in t]


def test_ascii_fast_path_counts_as_the_tokenizer_does():
    texts = _texts()
    assert all(map(prompts._plain, texts))  # every one takes the fast path
    reference = prompts._tokenizer()(texts, truncation=False, add_special_tokens=False)["input_ids"]
    fast = [sum(map(prompts._word_tokens, t.lower().split())) for t in texts]
    assert fast == [len(ids) for ids in reference]


def test_other_text_goes_to_the_tokenizer():
    for text in [
        "café au lait macule",
        "ＡＢＣ",
        "a\tb\nc",
        "<|endoftext|> mole",
        "x\u00a0y",
        "a\x7fb",
        "a\x1fb",
    ]:
        assert not prompts._plain(text)
        assert prompts.token_count(text) == prompts._tokenizer_count(text)


def test_ascii_prompts_count_without_loading_transformers(monkeypatch):
    monkeypatch.setattr(prompts, "_tokenizer", lambda: (_ for _ in ()).throw(AssertionError("loaded")))
    prompts.token_count.cache_clear()
    assert prompts.token_count("Benign mole on the forearm, dermoscopy, Fitzpatrick type IV") == 15
