"""Fixtures for the fault tests: small generated runs, the exactly-once check, fault proxies, Ray set-ups.

Every scenario ends with `exactly_once(store, planned)`: it counts planned vs written samples, asserts no
sample is missing or written twice, and that `dermgen.verify.verify_run` reports the run ok.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import threading
import uuid
from collections import Counter
from pathlib import Path

import pytest

from dermgen.rundir import RunDir, image_key, shard_key
from dermgen.shards import commit_shard

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE_MANIFEST = str(REPO_ROOT / "manifests" / "smoke.yaml")  # 4 benign + 4 malignant, 4 steps, 64 px


def _root_conftest():
    """tests/conftest.py as a module (both conftests are named `conftest`, so `import` is ambiguous)."""
    spec = importlib.util.spec_from_file_location(
        "dermgen_tests_conftest", REPO_ROOT / "tests" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_generate_run = _root_conftest().generate_run


def small_run(output, **kwargs) -> dict:
    """`generate_run` of the smoke manifest (8 samples, tiny model, filter off), 2 samples per shard."""
    kwargs.setdefault("manifest", SMOKE_MANIFEST)
    kwargs.setdefault("limit", 8)
    kwargs.setdefault("shard_size", 2)
    kwargs.setdefault("batch_size", 2)
    kwargs.setdefault("filter", "none")
    return _generate_run(output, **kwargs)


@contextlib.contextmanager
def one_torch_thread():
    """Render with one intra-op thread: on a busy 2-core machine two threads make the tiny model ~10x slower
    (Ray actors already run with OMP_NUM_THREADS=1)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with one_torch_thread():
        yield


@pytest.fixture
def gen():
    """Generate a small run: `gen(output, use_ray=..., **config)`; returns the run summary."""
    return small_run


def planned_sample_ids(store) -> set[str]:
    """Sample ids of every base shard of the plan recorded in the run's run.json."""

    from dermgen.rundir import RunDir

    plan = RunDir(store).info().plan()
    return {s.sample_id for shard in plan.shards for s in shard.samples}


def check_exactly_once(store, expected: int | None = None) -> dict:
    """Assert each planned sample is written exactly once and `verify_run` is ok; returns the counts."""
    from dermgen.rundir import RunDir
    from dermgen.verify import verify_run

    planned = planned_sample_ids(store)
    ids = RunDir(store).rows(["sample_id"]).column("sample_id").to_pylist()
    counts = Counter(ids)
    duplicates = sorted(k for k, n in counts.items() if n > 1)
    missing = sorted(planned - set(counts))
    report = verify_run(store)
    stats = {
        "planned": len(planned),
        "written": len(ids),
        "distinct": len(counts),
        "duplicates": len(duplicates),
        "missing": len(missing),
        "verify_ok": report.ok,
    }
    print(f"exactly-once check {store.uri}: {stats}")
    if expected is not None:
        assert len(planned) == expected, stats
    assert not duplicates, f"samples written twice: {duplicates[:5]}"
    assert not missing, f"planned samples not written: {missing[:5]}"
    assert len(ids) == len(planned), stats
    assert report.ok, report.problems
    assert not report.missing_shards, report.missing_shards
    return stats


@pytest.fixture(scope="session")
def base_run(tmp_path_factory) -> Path:
    """One finished small run (local folder, in-process), shared read-only; copy it before changing it."""
    out = tmp_path_factory.mktemp("reliability_base") / "run"
    with one_torch_thread():
        summary = small_run(out)
    assert summary["complete"] and summary["generated"] == 8
    return out


@pytest.fixture
def run_copy(base_run, tmp_path) -> Path:
    """A private copy of `base_run` that a test may damage."""
    dst = tmp_path / "run"
    shutil.copytree(base_run, dst)
    return dst


def copy_run_to_s3(src: Path, uri: str):
    """Upload a local run folder to an s3:// prefix; returns the S3 store."""
    from dermgen.store import LocalStore, open_store

    local, remote = LocalStore(src), open_store(uri)
    for key in local.list():
        remote.put(key, local.get(key))
    return remote


@pytest.fixture
def s3_run_copy(base_run, s3_bucket):
    """`base_run` uploaded to a fresh bucket on the loopback S3 server; returns the S3 store."""
    return copy_run_to_s3(base_run, f"s3://{s3_bucket}/run")


def uncommit(store, shard_id: str) -> list[dict]:
    """Take the store back to before `shard_id` committed; returns the shard's rows (with image bytes)."""
    rows = RunDir(store).read_shard(shard_id).to_pylist()
    store.delete(shard_key(shard_id))
    for r in rows:
        if r["image"] and r["image"]["path"]:
            store.delete(r["image"]["path"])
    assert not store.exists(shard_key(shard_id))
    return rows


def new_attempt(store, rows: list[dict]) -> tuple[str, list[dict], list[str]]:
    """Write one attempt's PNGs under its own attempt id, as a worker does; returns (id, rows, keys)."""
    attempt_id = uuid.uuid4().hex[:12]
    out, keys = [], []
    for r in rows:
        key = image_key(r["sample_id"], r["label"], attempt_id, r["kept"])
        store.put(key, r["image"]["bytes"])
        out.append(dict(r, attempt_id=attempt_id, image={"bytes": r["image"]["bytes"], "path": key}))
        keys.append(key)
    return attempt_id, out, keys


def race_commits(store, shard_id: str, n: int, barrier_timeout: float = 60) -> tuple[list, list]:
    """`n` threads commit the same shard at once; returns (CommitResult per thread, (attempt id, rows, PNG keys)
    per thread)."""
    rows = uncommit(store, shard_id)
    attempts = [new_attempt(store, rows) for _ in range(n)]
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[BaseException] = []

    def attempt(i: int) -> None:
        _, attempt_rows, keys = attempts[i]
        barrier.wait(timeout=barrier_timeout)
        try:
            results[i] = commit_shard(store, shard_id, attempt_rows, keys)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results, attempts


class _CommitRace:
    """What `commit_race` gives: call it to race, or use its helpers."""

    uncommit = staticmethod(uncommit)
    new_attempt = staticmethod(new_attempt)

    def __call__(self, store, shard_id: str, n: int) -> tuple[list, list]:
        return race_commits(store, shard_id, n)


@pytest.fixture
def commit_race():
    """`commit_race(store, shard_id, n)`: uncommit a shard, then `n` threads commit it at once."""
    return _CommitRace()


@pytest.fixture
def exactly_once():
    """`exactly_once(store, expected_planned)`: the end-of-scenario check (see check_exactly_once)."""
    return check_exactly_once


@pytest.fixture
def fault_proxy(s3_server, monkeypatch):
    """`fault_proxy(faults)`: start a FaultProxy in front of the moto server and point AWS_ENDPOINT_URL at it.

    Stores opened afterwards talk through the proxy; proxies are stopped at teardown.
    """
    from fault_proxy import FaultProxy

    started: list[FaultProxy] = []

    def start(faults) -> FaultProxy:
        proxy = FaultProxy(s3_server, faults).start()
        started.append(proxy)
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def ray_env():
    """`ray_env(env_vars)`: a fresh local Ray whose workers see `env_vars`; shut down after the test.

    Ray workers inherit the environment of the Ray that started them, so a test that needs a variable
    inside actors must start its own Ray. Other tests get a plain one again from `ray_local`.
    """
    import ray

    def start(env_vars: dict[str, str], num_cpus: int = 2):
        if ray.is_initialized():
            ray.shutdown()
        ray.init(
            address="local",  # a new Ray of our own, never another one running on this machine
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": dict(env_vars)},
        )
        return ray

    yield start
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def no_ray():
    """Make sure no Ray is connected in this process (before and after the test)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def fake_secrets(s3_server, monkeypatch) -> dict[str, str]:
    """Distinctive fake credentials in the env (the S3 server accepts any): easy to grep for."""
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIADERMGENLEAKCHECK7",
        "AWS_SECRET_ACCESS_KEY": "dermgen-secret-Zq8vX2lPq0r9sT4uV6wY1aB3cD5eF7gH",
        "AWS_SESSION_TOKEN": "dermgen-session-token-Kp3mN5bV7cX9zL1qW2eR4tY6uI8oP0aS",
        "HF_TOKEN": "hf_dermgenLeakCheckToken0123456789abcdef",
    }
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    return secrets
