"""Run and environment provenance: library versions, dermgen version and git commit, host facts.

Nothing here reads credentials; `redact` strips secret-looking keys from anything recorded.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from dermgen import __version__

LIBRARIES = (
    "torch",
    "diffusers",
    "transformers",
    "peft",
    "ray",
    "pyarrow",
    "numpy",
    "pillow",
    "boto3",
    "pydantic",
    "safetensors",
    "opencv-python-headless",
)
_SECRET_WORDS = ("secret", "token", "password", "credential", "access_key", "session_key", "api_key")


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The commit of the dermgen source tree (env DERMGEN_GIT_COMMIT wins, for packaged deployments)."""
    env = os.environ.get("DERMGEN_GIT_COMMIT")
    if env:
        return env
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def environment() -> dict[str, Any]:
    return {
        "dermgen_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "libraries": library_versions(),
    }


def redact(value: Any) -> Any:
    """Drop values under secret-looking keys, recursively."""
    if isinstance(value, dict):
        return {
            k: ("<redacted>" if any(w in str(k).lower() for w in _SECRET_WORDS) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
