"""A run as a Ray Data dataset: kept filter, decoded images, labels."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.slow
def test_read_run_with_ray_data(ray_local, crafted_run, crafted_selected):
    from dermgen.data.ray_data import read_run

    rows = read_run(crafted_run, where={"entry_id": ["e1", "e2"]}, image_size=4).take_all()
    assert len(rows) == 8
    ids = {r["sample_id"] for r in rows}
    assert "e1-0000002" not in ids and "e1-0000004" not in ids  # dropped and failed rows left out
    r = next(r for r in rows if r["sample_id"] == "e2-0000001")
    assert r["label"] == 1 and r["label_name"] == "malignant" and r["sampler"] == "Euler"
    assert (
        isinstance(r["image"], np.ndarray) and r["image"].shape == (4, 4, 3) and r["image"].dtype == np.uint8
    )


@pytest.mark.slow
def test_read_run_from_s3_reads_exactly_the_committed_shards(s3_tiny_run, ray_local):
    """Ray Data reads an S3 run through the run's store (one client configuration); a stray copy of a
    shard beside it is not counted."""
    import ray

    from dermgen.data.ray_data import read_run
    from dermgen.rundir import RunDir, shard_key

    ray.shutdown()  # Ray's workers must start with the loopback S3 server's environment
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)

    rd = RunDir(s3_tiny_run)
    sid = rd.shard_ids()[0]
    rd.store.put(f"shards/{sid} (copy).parquet", rd.store.get(shard_key(sid)))
    rows = read_run(s3_tiny_run, image_size=8, verify_images=True).take_all()
    assert len(rows) == 16 and len({r["sample_id"] for r in rows}) == 16
