"""CI smoke of the benchmark scripts: each runs in --quick mode and prints a JSON object as its last line.

Timings are measured by the scripts, never asserted here.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

CASES = {
    "orchestration_overhead.py": {"plain_s", "dermgen_s", "ratio"},
    "loader_throughput.py": set(),
    "filter_throughput.py": set(),
    "filter_calibration.py": set(),
    "filter_resolution.py": {"sizes", "splits"},
    "filter_memory.py": {"results", "peak_rss_mib_max", "sizes"},
    "gpu_throughput.py": {
        "plain_diffusers_fp16_batch1",
        "plain_diffusers_fp16_batched",
        "dermgen_actor_path",
        "dermgen_channels_first",
        "speedup",
        "speedup_vs_batched",
        "channels_last_gain",
    },
    "gpu_smoke.py": {"passed", "failed", "skipped"},
    "memorisation_index.py": {"index_build_s", "search_ms_p50", "match_new_ms_p50", "copies_found"},
    "memorisation_copies.py": {"copy_drop_rate", "others_kept_rate"},
    "plan_scale.py": {"cases", "all_met"},
    "driver_scale.py": {"idle_fraction", "dispatch_ms", "rss_mb", "shards", "complete"},
    "readside_scale.py": {"rows", "verify", "inspect", "report", "all_met"},
    "resume_scale.py": {"cases"},
}
TAKE_SAMPLES = {"loader_throughput.py", "filter_throughput.py", "filter_calibration.py"}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_quick_mode_prints_json(script, samples_dir):
    args = [sys.executable, str(REPO / "benchmarks" / script)]
    args.append("--cpu-smoke" if script.startswith("gpu_") else "--quick")
    if script in TAKE_SAMPLES:  # the test's PNG samples, not the scripts' default (materialised under /tmp)
        args += ["--samples", str(samples_dir)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict) and result
    assert CASES[script] <= set(result)
    if script == "gpu_throughput.py":  # the GPU script's own code path, on the CPU with the tiny model
        assert result["dermgen_actor_path"]["shards_committed"] >= 1
    if script == "gpu_smoke.py":  # every check that can run on a CPU passed; only CUDA-only ones skipped
        assert result["failed"] == [] and set(result["skipped"]) == {"cuda_graphs"}
        assert {"compile", "recompiles", "lora_fused", "nan_guard", "train_8bit"} <= set(result["passed"])


@pytest.mark.slow
def test_device_recipe_installs_offline_and_runs_the_smoke(tmp_path):
    """The GPU machine's recipe on this CPU: fetch the wheels (core + arrow groups, for this Python), install
    them offline into a folder, and run gpu_smoke --cpu-smoke importing dermgen from that folder."""
    import os

    wheels, site = tmp_path / "whl", tmp_path / "site"
    env = dict(os.environ, PYTHON=sys.executable, DEVICE_PYTHON_VERSION="{}.{}".format(*sys.version_info[:2]))
    fetch = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "device_wheels.sh"), str(wheels), "core", "arrow"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    offline = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable")
    if fetch.returncode != 0 and any(text in fetch.stderr for text in offline):
        pytest.skip(f"the package registry is not reachable: {fetch.stderr.strip()[-300:]}")
    assert fetch.returncode == 0, fetch.stderr[-3000:]
    files = sorted(p.name for p in wheels.rglob("*.whl"))
    for name in ("dermgen-", "diffusers-", "pydantic-", "typing_extensions-4.16", "peft-", "pyarrow-"):
        assert any(f.startswith(name) for f in files), (name, files)
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site)]
    proc = subprocess.run(install + [str(p) for p in wheels.rglob("*.whl")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
    smoke = [
        sys.executable,
        str(REPO / "benchmarks" / "gpu_smoke.py"),
        "--cpu-smoke",
        "--skip",
        "compile,recompiles",
    ]
    proc = subprocess.run(smoke, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["dermgen"].startswith(str(site))  # dermgen came from the installed wheel
    assert result["failed"] == [] and "nan_guard" in result["passed"]
