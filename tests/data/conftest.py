"""Fixtures for the loader tests: a packed run of the shared samples and a hand-made run with every row kind."""

from __future__ import annotations

import io
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermgen.schema import empty_scores
from dermgen.shards import commit_shard, image_key
from dermgen.store import LocalStore


@pytest.fixture(scope="session")
def packed_run(samples_dir, tmp_path_factory) -> Path:
    """The 120 shared samples packed as a run: 8 shards of 15 rows (one row group each)."""
    from dermgen.data.pack import pack_folder

    out = tmp_path_factory.mktemp("packed") / "run"
    pack_folder(samples_dir, out, shard_size=15)
    return out


def _png(value: int) -> bytes:
    arr = np.full((8, 8, 3), value % 256, dtype=np.uint8)
    arr[0, 0] = (value * 7) % 256
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _row(entry: str, label: str, index: int, **over) -> dict:
    sample_id = f"{entry}-{index:07d}"
    png = _png(index + (0 if label == "benign" else 128))
    kept = over.pop("kept", True)
    with_image = over.pop("with_image", True)
    scores = empty_scores()
    scores.update(over.pop("scores", {}))
    row = {
        "sample_id": sample_id,
        "shard_id": "",
        "run_id": "crafted",
        "attempt_id": "a1",
        "entry_id": entry,
        "index": index,
        "label": label,
        "tags": over.pop("tags", []),
        "prompt": f"{label} mole",
        "negative_prompt": "",
        "seed": 1000 + index,
        "sampler": over.pop("sampler", "Euler a"),
        "steps": over.pop("steps", 20),
        "cfg_scale": 7.0,
        "width": 8,
        "height": 8,
        "batch_size": 1,
        "loras": [],
        "model_id": "tiny",
        "model_sha256": "0" * 64,
        "model_hash": "0" * 10,
        "status": over.pop("status", "ok"),
        "error": None,
        "image": {"bytes": png, "path": image_key(sample_id, label, "a1", kept)} if with_image else None,
        "image_sha256": None,
        "kept": kept,
        "drop_reasons": over.pop("drop_reasons", []),
        "scores": scores,
        "timings": None,
        "actor": "test",
        "node": "test",
        "device": "cpu",
        "created_at": datetime.now(timezone.utc),
    }
    assert not over, over
    return row


@pytest.fixture(scope="session")
def crafted_selected() -> int:
    """Rows of `crafted_run` the default selection keeps: kept, status ok, with an image."""
    return 4 + 4 + 70


@pytest.fixture(scope="session")
def crafted_run(tmp_path_factory) -> Path:
    """Three shards: e1 (benign, every row kind), e2 (malignant, 4 samplers/steps), e3 (70 rows, 2 row groups)."""
    root = tmp_path_factory.mktemp("crafted") / "run"
    store = LocalStore(root)
    e1 = [
        _row("e1", "benign", 0, tags=["a"], scores={"blur": 0.1}),
        _row("e1", "benign", 1, sampler="Euler", tags=["a", "b"], scores={"blur": 0.5}),
        _row("e1", "benign", 2, kept=False, drop_reasons=["blur"], scores={"blur": 0.9}),
        _row("e1", "benign", 3, kept=False, with_image=False, drop_reasons=["ink"]),
        _row("e1", "benign", 4, kept=False, status="failed", with_image=False, drop_reasons=["failed"]),
        _row("e1", "benign", 5, sampler="PLMS", tags=["b"]),
        _row("e1", "benign", 6, sampler="Euler", scores={"blur": 0.3}),
    ]
    e2 = [
        _row("e2", "malignant", i, sampler=s, steps=20 + i, scores={"blur": 0.2 * i})
        for i, s in enumerate(["Euler a", "Euler", "PLMS", "Euler a"])
    ]
    e3 = [_row("e3", "malignant", i) for i in range(70)]
    for entry, rows in (("e1", e1), ("e2", e2), ("e3", e3)):
        shard_id = f"{entry}-0000000-{len(rows):07d}"
        for r in rows:
            r["shard_id"] = shard_id
            if r["image"] is not None:
                store.put(r["image"]["path"], r["image"]["bytes"])
        commit_shard(store, shard_id, rows, [])
    return root


def upload_dir(local: Path, bucket: str, prefix: str) -> str:
    """Copy a local run to s3://bucket/prefix with boto3; returns the URI."""
    import boto3

    client = boto3.client("s3")
    for path in sorted(Path(local).rglob("*")):
        if path.is_file():
            client.put_object(
                Bucket=bucket, Key=f"{prefix}/{path.relative_to(local).as_posix()}", Body=path.read_bytes()
            )
    return f"s3://{bucket}/{prefix}"


@pytest.fixture
def s3_tiny_run(tiny_run, s3_bucket) -> str:
    """The generated tiny run, uploaded to the loopback S3 server."""
    return upload_dir(tiny_run, s3_bucket, "runs/tiny")
