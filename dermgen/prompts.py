"""Prompt length in CLIP tokens: SD 1.x's text encoder sees 77 tokens (75 plus begin/end); the rest is
cut off silently by the pipeline. Counted with the SD 1.5 tokenizer shipped in `dermgen/configs/sd15`
(no network), recorded per row (`prompt_tokens`, `prompt_truncated`) and warned about once per entry.

Printable ASCII text (nearly every prompt) is counted here without loading the tokenizer: CLIP lowercases,
splits the text into pieces (letter runs, single digits, punctuation runs, English contractions) and runs
byte-pair merges on each piece alone, so a text's count is the sum of its pieces' counts, each computed
once from `merges.txt` (tests hold it equal to the tokenizer's). Anything else goes to the tokenizer.
A 250k-entry manifest is checked in about a second this way instead of minutes.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

CLIP_MAX_TOKENS = 77
PROMPT_TOKENS = CLIP_MAX_TOKENS - 2  # begin and end of text take two
TOKENIZER_DIR = Path(__file__).resolve().parent / "configs" / "sd15" / "tokenizer"

# The tokenizer's pre-tokenizer split (tokenizer `Split` pattern) restricted to lowercase ASCII, where
# \p{L} is [a-z] and \p{N} is [0-9]; both engines take the first alternative that matches, as `re` does.
_PIECES = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+")


def _plain(text: str) -> bool:
    """Printable ASCII (" " to "~"): no normalisation beyond lowercasing applies, and every byte maps to itself
    in CLIP's byte-level alphabet. "<|", which starts the special tokens' text, is left to the tokenizer."""
    return text.isascii() and text.isprintable() and "<|" not in text


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))


@functools.lru_cache(maxsize=1)
def _merge_ranks() -> dict[str, int]:
    """Rank of each merge, keyed by its line in the merges file ("first second"; symbols hold no space)."""
    lines = (TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()
    return {line: rank for rank, line in enumerate(lines[1:]) if line}


@functools.lru_cache(maxsize=65536)
def _piece_tokens(piece: str) -> int:
    """Tokens of one pre-tokenized piece: CLIP's byte-pair encoding (the lowest-ranked adjacent pair merged
    everywhere, repeatedly; the last symbol carries the end-of-word mark)."""
    ranks = _merge_ranks()
    word = [*piece[:-1], piece[-1] + "</w>"]
    while len(word) > 1:
        pairs = {f"{a} {b}" for a, b in zip(word[:-1], word[1:], strict=True)}
        best = min(pairs, key=lambda pair: ranks.get(pair, 1 << 30))
        if best not in ranks:
            break
        first, second = best.split(" ")
        merged, i = [], 0
        while i < len(word):
            if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return len(word)


@functools.lru_cache(maxsize=65536)
def _word_tokens(word: str) -> int:
    """Tokens of one space-free run of lowercase printable ASCII (no piece spans a space)."""
    return sum(map(_piece_tokens, _PIECES.findall(word)))


def _tokenizer_count(text: str) -> int:
    return len(_tokenizer()(text, truncation=False, add_special_tokens=False)["input_ids"])


def _count(text: str) -> int:
    if not text:
        return 0
    if _plain(text):
        return sum(map(_word_tokens, text.lower().split()))
    return _tokenizer_count(text)


@functools.lru_cache(maxsize=4096)
def token_count(text: str) -> int:
    """CLIP tokens of `text`, without the begin/end tokens."""
    return _count(text)


def is_truncated(text: str) -> bool:
    return token_count(text) > PROMPT_TOKENS


def warn_truncated(entries) -> list[str]:
    """Log one warning per manifest entry whose prompt or negative prompt is longer than CLIP reads;
    returns the ids warned about."""
    warned = []
    for e in entries:
        for what, text in (("prompt", e.prompt), ("negative_prompt", e.negative_prompt)):
            n = _count(text)  # not through token_count's cache: a large manifest's prompts are all distinct
            if n > PROMPT_TOKENS:
                log.warning(
                    "entry %s: %s is %d CLIP tokens; the text encoder reads the first %d, the rest is ignored "
                    "(rows record prompt_tokens and prompt_truncated)",
                    e.id,
                    what,
                    n,
                    PROMPT_TOKENS,
                )
                warned.append(e.id)
    return warned
