"""End to end as on a cluster: `ray start --head`, `ray job submit -- python jobs/generate_6k.py`, `ray stop`."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_cluster(temp_dir: str) -> None:
    """Stop only this cluster's processes (`ray stop` would also kill other Ray instances on the machine)."""
    import psutil

    procs = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in arg for arg in (p.info["cmdline"] or [])):
                procs.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit_generate_6k(tmp_path):
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs_port, dash_port = free_port(), free_port()
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the job's `python` is this environment's
    ray = str(BIN / "ray")
    start = subprocess.run(
        [
            ray,
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs_port}",
            "--num-cpus=2",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash_port}",
            f"--temp-dir={temp_dir}",
            # every port of its own: another Ray on this machine (the test session's) holds the defaults,
            # and a job agent that cannot bind never registers ("No available agent to submit job")
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert start.returncode == 0, start.stderr[-2000:]
    out = tmp_path / "jobrun"
    try:
        for _ in range(30):  # the dashboard's job agent registers a few seconds after `ray start` returns
            submit = subprocess.run(
                [
                    ray,
                    "job",
                    "submit",
                    "--address",
                    f"http://127.0.0.1:{dash_port}",
                    "--working-dir",
                    ".",
                    "--",
                    "python",
                    "jobs/generate_6k.py",
                    "--model",
                    "tiny",
                    "--limit",
                    "8",
                    "--filter",
                    "none",
                    "--output",
                    str(out),
                    "--progress-interval",
                    "2",
                ],
                capture_output=True,
                text=True,
                env=env,
                cwd=REPO,
                timeout=600,
            )
            if "No available agent" not in submit.stdout + submit.stderr:
                break
            time.sleep(2)
    finally:
        stop_cluster(temp_dir)
    log = submit.stdout + submit.stderr
    assert submit.returncode == 0, log[-3000:]
    assert "succeeded" in log and "kept benign 4/4, malignant 4/4" in log
    assert "img/s" in log  # progress lines reach `ray job logs`
    rows = [r for p in sorted((out / "shards").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len(rows) == 8 and len({r["sample_id"] for r in rows}) == 8
    assert {r["label"] for r in rows} == {"benign", "malignant"}
