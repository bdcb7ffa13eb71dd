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
    "gpu_throughput.py": {"plain_diffusers_fp16_batch1", "dermgen_actor_path", "speedup"},
    "memorisation_index.py": {"index_build_s", "search_ms_p50", "match_new_ms_p50", "copies_found"},
    "memorisation_copies.py": {"copy_drop_rate", "others_kept_rate"},
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_quick_mode_prints_json(script, samples_dir):
    args = [sys.executable, str(REPO / "benchmarks" / script)]
    args.append("--cpu-smoke" if script == "gpu_throughput.py" else "--quick")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict) and result
    assert CASES[script] <= set(result)
    if script == "gpu_throughput.py":  # the GPU script's own code path, on the CPU with the tiny model
        assert result["dermgen_actor_path"]["shards_committed"] >= 1
