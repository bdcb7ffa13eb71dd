"""End to end: jobs/validate_classifier.py on the shared samples, on the CPU, beats chance on a held-out split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

JOB = Path(__file__).resolve().parents[2] / "jobs" / "validate_classifier.py"


def test_cli_contract_and_accuracy_above_chance(sample_splits, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(JOB),
        "--real", str(sample_splits["real"]),
        "--synthetic", str(sample_splits["syn"]),
        "--test", str(sample_splits["test"]),
        "--model", "mobilenet_v2",
        "--weights", "none",
        "--model-size", "tiny",
        "--image-size", "64",
        "--epochs", "12",
        "--batch-size", "16",
        "--synthetic-ratio", "0.75",
        "--seed", "0",
        "--cpu-threads", "1",
        "--output", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    held_out = metrics["baseline"]["test"]
    assert held_out["n"] == 40  # 20 benign + 20 malignant never seen in training
    # chance is 0.5; 28/40 or better has p < 0.01 under chance
    assert held_out["accuracy"] >= 0.7, held_out
    assert metrics["hybrid"]["test"]["accuracy"] >= 0.7, metrics["hybrid"]["test"]
    assert metrics["training"]["hybrid"]["composition"]["synthetic"] == 30
    assert (out / "table.md").is_file() and (out / "curves.png").is_file()
    assert "| MobileNet-V2 (tiny), baseline |" in proc.stdout


def test_cli_rejects_bad_arguments(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(JOB), "--real", str(tmp_path), "--test", str(tmp_path), "--model", "mobilenet_v2",
         "--weights", "none", "--output", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "hybrid mode needs --synthetic" in proc.stderr
