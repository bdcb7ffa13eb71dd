"""PNG encoding with an A1111-style `parameters` text chunk, so image tools show how each image was made,
and an XMP packet that marks the image as AI-generated (IPTC digital source type) for metadata tools."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from dermgen import __version__


def a1111_parameters(
    *,
    prompt: str,
    negative_prompt: str,
    steps: int,
    sampler: str,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    model_hash: str,
    model_name: str,
    loras: list[dict[str, Any]] | None = None,
) -> str:
    """The text the Stable Diffusion web UI writes (and reads back) for one image."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    cfg = int(cfg_scale) if float(cfg_scale).is_integer() else cfg_scale
    fields = [
        f"Steps: {steps}",
        f"Sampler: {sampler}",
        f"CFG scale: {cfg}",
        f"Seed: {seed}",
        f"Size: {width}x{height}",
        f"Model hash: {model_hash}",
        f"Model: {model_name}",
    ]
    if loras:
        hashes = ", ".join(f"{lr['name']}: {str(lr.get('sha256', ''))[:12]}" for lr in loras)
        fields.append(f'Lora hashes: "{hashes}"')
        fields.append("Lora scales: " + ", ".join(f"{lr['name']}={lr['scale']:g}" for lr in loras))
    fields.append(f"Version: dermgen {__version__}")
    lines.append(", ".join(fields))
    return "\n".join(lines)


def parse_a1111_parameters(text: str) -> dict[str, str]:
    """Parse a `parameters` chunk into prompt, negative prompt and the key/value fields."""
    lines = text.strip().split("\n")
    out: dict[str, str] = {}
    last = lines[-1]
    body = lines[:-1]
    neg = [ln for ln in body if ln.startswith("Negative prompt: ")]
    out["prompt"] = "\n".join(ln for ln in body if not ln.startswith("Negative prompt: "))
    if neg:
        out["negative_prompt"] = neg[0][len("Negative prompt: ") :]
    # split on ", " outside quotes
    parts, cur, quoted = [], "", False
    for ch in last:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for part in parts:
        key, sep, value = part.strip().partition(": ")
        if sep:
            out[key] = value.strip('"')
    return out


XMP_KEY = "XML:com.adobe.xmp"  # the iTXt keyword under which PNG carries an XMP packet
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def xmp_packet(creator_tool: str | None = None) -> str:
    """An XMP packet saying the image was made by a trained model (IPTC ``DigitalSourceType``) and by what.

    ``xmp:CreatorTool`` is the generator with its version (``dermgen 0.1.0`` by default). The packet is
    the same for every image, so PNG bytes stay reproducible.
    """
    tool = creator_tool or f"dermgen {__version__}"
    tool = tool.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
        '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        f'    Iptc4xmpExt:DigitalSourceType="{DIGITAL_SOURCE_TYPE}"\n'
        f'    xmp:CreatorTool="{tool}"/>\n'
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="r"?>'
    )


_XMP = xmp_packet()


def encode_png(
    image: np.ndarray, parameters: str, extra: dict[str, Any] | None = None, compress_level: int = 3
) -> bytes:
    """Lossless PNG bytes of an HxWx3 uint8 image with the `parameters` chunk (and a `dermgen` JSON chunk)
    and the XMP packet of :func:`xmp_packet` (an uncompressed iTXt chunk, where XMP readers look)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    info.add_itxt(XMP_KEY, _XMP, zip=False)
    if extra:
        info.add_text("dermgen", json.dumps(extra, sort_keys=True))
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    return buf.getvalue()


def decode_png(data: bytes) -> tuple[np.ndarray, dict[str, str]]:
    """Pixels and text chunks of PNG bytes."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return np.asarray(img.convert("RGB")), dict(getattr(img, "text", {}) or {})
