"""Read-side tools at scale: `dermgen verify`, `dermgen inspect` and `dermgen report` on a run packed from
many small images, each timed as a fresh process (wall time and that child's peak RSS via os.wait4).

The run is built once with `dermgen.data.pack.pack_folder` (files layout: image bytes in the Parquet rows
and one PNG object per image) from a folder of distinct 16x16 noise PNGs, split over two labels, and kept
under `--workdir` so a second invocation measures without rebuilding.

    python benchmarks/readside_scale.py                 # 100k rows (builds the run once: a few minutes)
    python benchmarks/readside_scale.py --quick         # CI smoke: 2k rows in a temporary folder

Target (issue: read-side tools at scale): peak RSS <= 1 GB for each command on 100k rows.
Prints JSON as its last line: rows, shards, build_s and per command wall_s, peak_rss_mb, exit code and
`met`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_MB = 1024
SIDE = 16


def make_images(folder: Path, rows: int) -> None:
    """`rows` distinct small PNGs under folder/benign and folder/malignant (half each)."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("benign", "malignant"):
        (folder / label).mkdir(parents=True, exist_ok=True)
    for i in range(rows):
        pixels = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
        label = "benign" if i % 2 == 0 else "malignant"
        (folder / label / f"img{i:07d}.png").write_bytes(buf.getvalue())


def build(work: Path, rows: int, shard_size: int) -> None:
    """Pack `rows` images into work/run (run in a child: this process stays small, see `build_run`)."""
    sys.path.insert(0, str(REPO))
    from dermgen.data.pack import pack_folder

    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    make_images(work / "images", rows)
    pack_folder(work / "images", work / "run", shard_size=shard_size)
    shutil.rmtree(work / "images")
    built = time.perf_counter() - t0
    (work / "built.json").write_text(
        json.dumps({"rows": rows, "shard_size": shard_size, "build_s": round(built, 1)})
    )


def build_run(work: Path, rows: int, shard_size: int) -> tuple[Path, float]:
    """The packed run under `work` (reused when complete); returns its path and the seconds spent building.

    Built by a child process: Linux carries a process's peak RSS across fork + exec, so the parent that
    starts the measured commands must stay small (no numpy, pyarrow or PIL imported here).
    """
    done = work / "built.json"
    if not (done.is_file() and json.loads(done.read_text()).get("rows") == rows):
        cmd = [sys.executable, __file__, "--build-only", "--rows", str(rows), "--shard-size", str(shard_size)]
        subprocess.run([*cmd, "--workdir", str(work)], check=True, cwd=REPO)
        return work / "run", json.loads(done.read_text())["build_s"]
    return work / "run", 0.0


def measure(args: list[str], log: Path) -> dict:
    """Run `python -m dermgen ARGS` as a child: wall time, exit code and its peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "dermgen", *args]
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    out = {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "rc": rc}
    if rc != 0:
        out["tail"] = log.read_bytes()[-2000:].decode(errors="replace")
    out["met"] = rc == 0 and out["peak_rss_mb"] <= TARGET_MB
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="rows of the packed run")
    ap.add_argument("--shard-size", type=int, default=64, help="rows per shard (pack's default)")
    ap.add_argument("--workdir", default=None, help="where the run is built and kept (default: /tmp)")
    ap.add_argument("--commands", default="verify,inspect,report", help="comma-separated commands")
    ap.add_argument("--quick", action="store_true", help="CI smoke: 2k rows in a temporary folder")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_only:
        return build(Path(args.workdir), args.rows, args.shard_size)
    rows = 2000 if args.quick else args.rows
    tmp = tempfile.TemporaryDirectory(prefix="readside_scale_") if args.quick else None
    work = Path(tmp.name if tmp else args.workdir or f"/tmp/dermgen-readside-{rows}")
    try:
        run, built = build_run(work, rows, args.shard_size)
        shards = len(list((run / "shards").glob("*.parquet")))
        result: dict = {"rows": rows, "shards": shards, "build_s": round(built, 1), "target_mb": TARGET_MB}
        for name in args.commands.split(","):
            cmd = {
                "verify": ["verify", str(run), "--json"],
                "inspect": ["inspect", str(run), "--json"],
                "report": ["report", str(run), "--output", str(work / "report")],
            }[name]
            result[name] = measure(cmd, work / f"{name}.out")
            print(json.dumps({name: result[name]}), file=sys.stderr)
        result["all_met"] = all(result[n]["met"] for n in args.commands.split(","))
    finally:
        if tmp:
            tmp.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
