"""Prompt length in CLIP tokens: SD 1.x's text encoder sees 77 tokens (75 plus begin/end); the rest is
cut off silently by the pipeline. Counted with the SD 1.5 tokenizer shipped in `dermgen/configs/sd15`
(no network), recorded per row (`prompt_tokens`, `prompt_truncated`) and warned about once per entry.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

log = logging.getLogger(__name__)

CLIP_MAX_TOKENS = 77
PROMPT_TOKENS = CLIP_MAX_TOKENS - 2  # begin and end of text take two
TOKENIZER_DIR = Path(__file__).resolve().parent / "configs" / "sd15" / "tokenizer"


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))


@functools.lru_cache(maxsize=4096)
def token_count(text: str) -> int:
    """CLIP tokens of `text`, without the begin/end tokens."""
    if not text:
        return 0
    return len(_tokenizer()(text, truncation=False, add_special_tokens=False)["input_ids"])


def is_truncated(text: str) -> bool:
    return token_count(text) > PROMPT_TOKENS


def warn_truncated(entries) -> list[str]:
    """Log one warning per manifest entry whose prompt or negative prompt is longer than CLIP reads;
    returns the ids warned about."""
    warned = []
    for e in entries:
        for what, text in (("prompt", e.prompt), ("negative_prompt", e.negative_prompt)):
            n = token_count(text)
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
