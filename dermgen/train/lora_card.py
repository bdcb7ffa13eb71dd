"""The LoRA card: what an adapter was trained from and how, written next to the weights as ``lora_card.json``.

A card binds the adapter to its base model (sha256 / A1111 short hash), its data (sha256 over the sorted
file list and file hashes, counts per label), every hyperparameter, the final loss and the software that
made it, so a generated dataset can be traced back to the exact fine-tuning run.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dermgen.hashing import sha256_bytes, sha256_file
from dermgen.preprocess import ImageSource

CARD_NAME = "lora_card.json"
CARD_VERSION = 1


def data_fingerprint(sources: Sequence[ImageSource], uri: str) -> dict[str, Any]:
    """sha256 over the sorted ``label/name`` list and each file's sha256, with counts per label.

    Renaming, adding, removing or editing any image changes it; the order the files were found in does not.
    """
    entries = []
    for s in sources:
        digest = sha256_bytes(s.data) if s.data is not None else sha256_file(s.path, cache=False)
        entries.append((f"{s.label}/{s.name}", digest))
    h = hashlib.sha256()
    for key, digest in sorted(entries):
        h.update(key.encode())
        h.update(b"\0")
        h.update(digest.encode())
        h.update(b"\n")
    counts = Counter(s.label for s in sources)
    return {
        "uri": uri,
        "sha256": h.hexdigest(),
        "images": len(entries),
        "counts": dict(sorted(counts.items())),
        "reference": memorisation_reference(uri),
    }


def memorisation_reference(uri: str) -> dict[str, str] | None:
    """The training folder as a memorisation reference set: its absolute path and the content hash that
    keys its reference index (`dermgen audit RUN` finds it from here); None when not a local folder."""
    from dermgen.filters.dedup import iter_image_files
    from dermgen.filters.reference_index import content_hash, reference_folder

    if "://" in uri or not Path(uri).is_dir():
        return None
    root = reference_folder(uri).resolve()
    return {"path": str(root), "sha256": content_hash(root, iter_image_files(root))}


def build_card(
    *,
    base_model: dict[str, Any],
    data: dict[str, Any],
    class_data: dict[str, Any] | None,
    hyperparameters: dict[str, Any],
    training: dict[str, Any],
    adapter_path: str | Path,
    environment: dict[str, Any],
) -> dict[str, Any]:
    """Assemble the card (a plain JSON-able dict)."""
    adapter = Path(adapter_path)
    return {
        "card_version": CARD_VERSION,
        "adapter": {
            "file": adapter.name,
            "sha256": sha256_file(adapter, cache=False),
            "format": "diffusers LoRA (peft), StableDiffusionPipeline.save_lora_weights",
            "use": f"dermgen generate --lora {adapter}:1.0",
        },
        "base_model": base_model,
        "data": data,
        "class_data": class_data,
        "hyperparameters": hyperparameters,
        "training": training,
        "dermgen_version": environment.get("dermgen_version"),
        "environment": environment,
    }


def write_card(card: dict[str, Any], output: str | Path) -> Path:
    path = Path(output) / CARD_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
    return path


def read_card(path: str | Path) -> dict[str, Any]:
    """Read a card from its file or from the folder that holds it."""
    p = Path(path)
    if p.is_dir():
        p = p / CARD_NAME
    elif p.suffix == ".safetensors":
        p = p.with_name(CARD_NAME)
    return json.loads(p.read_text())
