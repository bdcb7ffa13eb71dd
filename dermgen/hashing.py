"""Content hashes for weights and images, with an on-disk cache for multi-GB checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from dermgen.cache import cache_dir

_CHUNK = 8 * 1024 * 1024


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, *, cache: bool = True) -> str:
    """sha256 of a file; cached by (path, size, mtime) so a 4 GB checkpoint is hashed once per machine."""
    p = Path(path).resolve()
    st = p.stat()
    key = sha256_bytes(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    cache_file = _cache_dir() / f"{key}.json"
    if cache and cache_file.exists():
        try:
            return json.loads(cache_file.read_text())["sha256"]
        except (ValueError, KeyError, OSError):
            pass
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    if cache and st.st_size > _CHUNK:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_text(json.dumps({"path": str(p), "sha256": digest}))
        except OSError:
            pass
    return digest


def sha256_tree(
    path: str | os.PathLike, suffixes: tuple[str, ...] = (".safetensors", ".bin", ".json")
) -> str:
    """One hash over a folder's weight and config files (relative path + file hash, sorted)."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in suffixes):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def sha256_state_dict(modules: dict) -> str:
    """Hash of in-memory weights (name order, float32 bytes): the fingerprint of a generated model."""
    h = hashlib.sha256()
    for mod_name in sorted(modules):
        state = modules[mod_name].state_dict()
        for name in sorted(state):
            h.update(f"{mod_name}.{name}".encode())
            h.update(state[name].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def short_hash(sha256: str) -> str:
    """The A1111 web UI's short model hash (first 10 hex digits of the sha256)."""
    return sha256[:10]


def _cache_dir() -> Path:
    return cache_dir("sha256")
