"""Pack existing images (a ``<root>/<label>/`` folder) into a run: the same shards the generator writes.

Useful to put real data, or the published Derm-T2IM samples, behind the same loaders and tooling
(benchmarks and tests use it to get real-sized PNG shards without a GPU). Rows follow the shard schema:
one entry per label (``<prefix><label>``), generation fields parsed from the PNG's A1111 ``parameters``
chunk when present (prompt, seed, sampler, steps, CFG, model hash), every row ``kept``, filter scores
null. PNG bytes are stored as they are; other formats are decoded and re-encoded as PNG (lossless
from the decoded pixels). The run's ``run.json`` says ``"kind": "packed"``: it has no generation plan,
so `dermgen verify` (which rebuilds the plan) does not apply to it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

from dermgen.data.labels import LabelMap
from dermgen.data.real import scan_folder
from dermgen.hashing import sha256_bytes
from dermgen.pngmeta import parse_a1111_parameters
from dermgen.rundir import RunDir, RunInfo, image_key
from dermgen.schema import empty_scores
from dermgen.shards import commit_shard
from dermgen.store import open_store

log = logging.getLogger(__name__)

PACK_ATTEMPT = "packed"


def _png_bytes(data: bytes) -> tuple[bytes, dict[str, str], tuple[int, int]]:
    img = Image.open(io.BytesIO(data))
    text = dict(getattr(img, "text", {}) or {})
    size = img.size
    if img.format == "PNG":
        return data, text, size
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG", compress_level=3)
    return buf.getvalue(), text, size


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(str(value).strip())
    except (TypeError, ValueError):
        return None


def _row(
    record: dict[str, Any], entry_id: str, index: int, run_id: str, png: bytes, text: dict[str, str], size
) -> dict[str, Any]:
    params = parse_a1111_parameters(text["parameters"]) if text.get("parameters") else {}
    label = record["label"]
    return {
        "sample_id": f"{entry_id}-{index:07d}",
        "shard_id": "",
        "run_id": run_id,
        "attempt_id": PACK_ATTEMPT,
        "entry_id": entry_id,
        "index": index,
        "label": label,
        "tags": ["packed"],
        "prompt": params.get("prompt"),
        "negative_prompt": params.get("negative_prompt"),
        "seed": _int(params.get("Seed")) or 0,
        "sampler": params.get("Sampler"),
        "steps": _int(params.get("Steps")),
        "cfg_scale": _float(params.get("CFG scale")),
        "width": size[0],
        "height": size[1],
        "batch_size": None,
        "loras": [],
        "model_id": params.get("Model") or "external",
        "model_sha256": None,
        "model_hash": params.get("Model hash"),
        "status": "ok",
        "error": None,
        "image": {"bytes": png, "path": image_key(f"{entry_id}-{index:07d}", label, PACK_ATTEMPT, True)},
        "image_sha256": sha256_bytes(png),
        "kept": True,
        "drop_reasons": [],
        "scores": empty_scores(),
        "timings": None,
        "actor": "pack",
        "node": socket.gethostname(),
        "device": None,
        "created_at": datetime.now(timezone.utc),
    }


def pack_folder(
    root: str | os.PathLike,
    output: str | os.PathLike,
    *,
    label_map: LabelMap | Mapping[str, int] | None = None,
    shard_size: int = 64,
    entry_prefix: str = "packed_",
    write_png_objects: bool = True,
    limit_per_label: int | None = None,
) -> dict[str, Any]:
    """Write the images under `root` as a run at `output` (local path or s3://). Returns the summary.

    Deterministic: files are taken in sorted order per label, so the same folder gives the same rows
    (except ``created_at`` and ``node``). Existing shards at `output` are left alone (a committed shard
    is never rewritten), so packing twice into one place is a no-op for those shards.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size: {shard_size} must be >= 1")
    store = open_store(output)
    store.check_writable()
    records = scan_folder(root, label_map)
    by_label: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_label.setdefault(rec["label"], []).append(rec)
    if limit_per_label is not None:
        by_label = {k: v[:limit_per_label] for k, v in by_label.items()}
    run_id = sha256_bytes(
        json.dumps({k: [r["sample_id"] for r in v] for k, v in sorted(by_label.items())}).encode()
    )[:16]
    rd = RunDir(store)
    rd.write_info(
        RunInfo(
            run_id=run_id,
            kind="packed",
            source=str(Path(root).expanduser()),
            created_at=datetime.now(timezone.utc).isoformat(),
            shard_size=shard_size,
            images="files" if write_png_objects else "parquet",
        ),
        create=False,
    )
    labels: dict[str, int] = {}
    shards = 0
    for label, recs in sorted(by_label.items()):
        entry_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"{entry_prefix}{label}")
        for start in range(0, len(recs), shard_size):
            chunk = recs[start : start + shard_size]
            rows, keys = [], []
            shard_id = f"{entry_id}-{start:07d}-{start + len(chunk):07d}"
            for offset, rec in enumerate(chunk):
                png, text, size = _png_bytes(Path(rec["path"]).read_bytes())
                row = _row(rec, entry_id, start + offset, run_id, png, text, size)
                row["shard_id"] = shard_id
                if write_png_objects:
                    store.put(row["image"]["path"], png)
                    keys.append(row["image"]["path"])
                else:
                    row["image"]["path"] = None
                rows.append(row)
            commit_shard(store, shard_id, rows, keys)
            shards += 1
        labels[label] = len(recs)
    summary = {
        "run_id": run_id,
        "kind": "packed",
        "shards": shards,
        "labels": labels,
        "kept": sum(labels.values()),
        "committed_shards": rd.shard_ids(),
    }
    rd.write_summary(summary)
    log.info("packed %d image(s) from %s into %d shard(s) at %s", summary["kept"], root, shards, store.uri)
    return summary
