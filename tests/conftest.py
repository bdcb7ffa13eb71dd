"""Shared fixtures: a local Ray, a real S3-compatible server on 127.0.0.1, and small generated runs.

Session-scoped where starting them is slow; every test still asserts on behaviour of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import REPO_ROOT, generate_run, make_lora  # noqa: F401 - re-exported

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
os.environ.setdefault("DERMGEN_ACTOR_STAGGER_S", "0")


def pytest_configure(config):
    """One torch thread, like Ray actors: tiny 64 px models gain nothing from threads, and a shared 2-core
    machine loses a lot to oversubscription."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory) -> Path:
    """The 120 real Derm-T2IM outputs as 512x512 PNGs with their ``parameters`` chunk (benign/, malignant/),
    written from the JPEG copies in tests/assets (a missing asset fails the test, it never skips)."""
    from filterlab.samples import materialise_samples

    return materialise_samples(tmp_path_factory.mktemp("derm-t2im-samples"))


@pytest.fixture(scope="session")
def sample_splits(samples_dir, tmp_path_factory) -> dict[str, Path]:
    """Disjoint, seeded splits of the samples for classifier tests: real/ (25+25) and test/ (20+20)
    folders, and syn (15+15) packed as a run standing in for a synthetic one."""
    from dermgen.data.pack import pack_folder
    from dermgen.data.real import split_folder

    root = tmp_path_factory.mktemp("splits")
    split_folder(samples_dir, root, {"real": 50, "test": 40, "syn_src": 30}, seed=0)
    pack_folder(root / "syn_src", root / "syn", shard_size=8)
    return {"real": root / "real", "test": root / "test", "syn": root / "syn"}


@pytest.fixture
def ray_local():
    """A local Ray (4 logical CPUs) shared across tests; re-started if a test shut it down."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible HTTP server (moto) on 127.0.0.1, with credentials and endpoint in the env."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket on the loopback S3 server; returns its name."""
    import re
    import uuid

    import boto3

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A 16-image run of the 6k manifest with the tiny model, filter off, written in-process."""
    out = tmp_path_factory.mktemp("tiny_run") / "run"
    generate_run(out, limit=16, filter="none")
    return out


@pytest.fixture(scope="session")
def tiny_lora(tmp_path_factory) -> Path:
    """Path of a random LoRA .safetensors file compatible with the tiny model."""
    return make_lora(tmp_path_factory.mktemp("lora"))
