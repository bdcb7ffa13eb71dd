"""Regenerate the SD 1.x CLIP tokenizer files (`sd15/tokenizer/vocab.json`, `merges.txt`) offline.

Stable Diffusion 1.x uses OpenAI CLIP ViT-L/14's byte-level BPE tokenizer. Its only source is the BPE merge
list `bpe_simple_vocab_16e6.txt.gz` that OpenAI published with CLIP; the `open_clip_torch` wheel ships a copy,
so the tokenizer can be rebuilt from a package registry without the Hugging Face hub. This script does what
CLIP's `SimpleTokenizer` and the Hugging Face conversion of it do:

- merges: lines 1 .. 48894 of the file (line 0 is a header), i.e. 49152 - 256 - 2 merges;
- vocabulary (49408 ids): the 256 byte-to-unicode characters, the same 256 with `</w>` appended, every merge
  joined, then `<|startoftext|>` (49406) and `<|endoftext|>` (49407);
- `merges.txt` is `#version: 0.2` followed by one merge per line, as Hugging Face writes it.

The generated files are committed; this script is not run at test time. Usage::

    pip download --no-deps open_clip_torch -d /tmp/oc
    python dermgen/configs/make_tokenizer.py /tmp/oc/open_clip_torch-*.whl

(a path to an extracted `bpe_simple_vocab_16e6.txt.gz` works too; `--out DIR` writes elsewhere).
"""

from __future__ import annotations

import argparse
import gzip
import json
import zipfile
from pathlib import Path

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # 48894
VOCAB_SIZE = 49408
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
DEFAULT_OUT = Path(__file__).parent / "sd15" / "tokenizer"


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible map from the 256 byte values to printable unicode characters (in CLIP's order)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def read_bpe(source: Path) -> list[tuple[str, str]]:
    """The CLIP merge list from an open_clip_torch wheel or a bpe_simple_vocab_16e6.txt.gz file."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            raw = gzip.decompress(wheel.read(BPE_MEMBER))
    else:
        raw = gzip.decompress(source.read_bytes())
    lines = raw.decode("utf-8").split("\n")[1 : N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{source}: expected {N_MERGES} merges of two symbols each, got a different file")
    return merges  # type: ignore[return-value]


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id exactly as CLIP's SimpleTokenizer numbers them."""
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + list(SPECIAL_TOKENS)
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"expected {VOCAB_SIZE} distinct tokens, got {len(vocab)}")
    return vocab


def write_tokenizer(source: Path, out: Path = DEFAULT_OUT) -> tuple[Path, Path]:
    merges = read_bpe(source)
    vocab = build_vocab(merges)
    out.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = out / "vocab.json", out / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return vocab_file, merges_file


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="open_clip_torch wheel or bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in write_tokenizer(args.source, args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
