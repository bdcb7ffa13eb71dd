"""Synthetic-origin marking: every PNG carries an XMP packet with the IPTC digital source type."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dermgen import __version__
from dermgen.pngmeta import DIGITAL_SOURCE_TYPE, XMP_KEY, decode_png, encode_png

EXIFTOOL_HINT = "exiftool not installed (Debian/Ubuntu: apt-get install libimage-exiftool-perl)"


def exiftool_xmp(paths: list[Path]) -> list[dict]:
    """``exiftool -j -XMP:all`` on the files; skips the test when ExifTool is absent."""
    exe = shutil.which("exiftool")
    if exe is None:
        pytest.skip(EXIFTOOL_HINT)
    out = subprocess.run(
        [exe, "-j", "-XMP:all", *map(str, paths)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_xmp_packet_is_beside_the_parameters_chunk(tmp_path):
    data = encode_png(np.full((16, 16, 3), 128, np.uint8), "a mole\nSteps: 4", extra={"sample_id": "x-0"})
    _, text = decode_png(data)
    assert text["parameters"] == "a mole\nSteps: 4"
    assert DIGITAL_SOURCE_TYPE in text[XMP_KEY]
    path = tmp_path / "one.png"
    path.write_bytes(data)
    (meta,) = exiftool_xmp([path])
    assert meta["DigitalSourceType"] == DIGITAL_SOURCE_TYPE
    assert meta["CreatorTool"] == f"dermgen {__version__}"
