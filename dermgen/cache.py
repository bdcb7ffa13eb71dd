"""The one local cache location: `$DERMGEN_CACHE`, else `~/.cache/dermgen`.

Below it: `sha256/` (content hashes of big files), `downloads/` (s3:// checkpoints and LoRAs),
`derm-t2im/` (the published checkpoint, when placed there).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "DERMGEN_CACHE"


def cache_dir(*parts: str) -> Path:
    """`<cache root>/<parts...>` (not created); the root is read from the environment on every call."""
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "dermgen")
    return Path(base, *parts)
