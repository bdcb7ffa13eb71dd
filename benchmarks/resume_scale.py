"""Resume at scale: a run with many committed shards on the S3 server used in tests (moto on 127.0.0.1), and
the time and memory `dermgen generate` spends rebuilding its state before any GPU work.

Steps, each in its own process so that each one's peak RSS is its own:
  1. a moto S3 server on 127.0.0.1 (as tests/conftest.py `s3_server`) in a child process;
  2. `prepare_run` once on the empty prefix (binds run.json), then N committed shard objects written
     with a thread pool: Parquet files of the shard schema, `--rows-per-shard` rows each, image bytes null;
  3. the measured resume: `dermgen.run.prepare_run(config)` in a fresh process (validation, plan,
     `check_output`'s listing, run binding, every committed shard's summary, the scheduler), which is the
     code path `dermgen generate` takes before it starts actors. It reports its wall time, the shards it
     found committed, the shards left to render and its own peak RSS (VmHWM).

    python benchmarks/resume_scale.py                   # 100k committed shards (builds them: minutes)
    python benchmarks/resume_scale.py --shards 10000,30000
    python benchmarks/resume_scale.py --quick           # CI smoke: 500 shards

Prints JSON as its last line: per size shards, populate_s, resume_s, peak_rss_mb, committed, left.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROWS_PER_SHARD = 2


def _env(endpoint: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def write_manifest(folder: Path, shards: int, rows_per_shard: int) -> Path:
    """A tiny-model manifest whose plan (filter off, no limit) has exactly `shards` shards (+1%, left to
    render, so the resumed scheduler has work to find)."""
    shards += max(1, shards // 100)
    path = folder / f"resume_{shards}.yaml"
    per_entry = shards // 2
    counts = [per_entry, shards - per_entry]
    lines = [
        "name: resume-scale",
        "model: tiny",
        "defaults: {samplers: [Euler], steps: 2, cfg_scale: 7, size: 64}",
    ]
    lines.append("entries:")
    for i, (label, n) in enumerate(zip(("benign", "malignant"), counts, strict=True)):
        lines += [f"  - id: e{i}_{label}", f"    label: {label}", f"    prompt: {label} mole"]
        lines += [f"    count: {n * rows_per_shard}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def config_for(manifest: Path, output: str, rows_per_shard: int):
    from dermgen.config import GenerateConfig

    return GenerateConfig(
        manifest=str(manifest), model="tiny", output=output, filter="none", shard_size=rows_per_shard
    )


def populate(manifest: Path, output: str, rows_per_shard: int, threads: int, commit: int) -> dict:
    """Bind the run, then write the first `commit` planned shards as committed objects (thread pool)."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq

    from dermgen.run import prepare_run
    from dermgen.rundir import shard_key
    from dermgen.schema import SHARD_SCHEMA

    t0 = time.perf_counter()
    prepared = prepare_run(config_for(manifest, output, rows_per_shard))
    plan, store, run_id = prepared.plan, prepared.store, prepared.run_id
    _ = store.client  # made once, shared by the threads

    def body(shard) -> bytes:
        samples = shard.samples
        cols = {name: [None] * len(samples) for name in SHARD_SCHEMA.names}
        cols.update(
            sample_id=[s.sample_id for s in samples],
            shard_id=[shard.shard_id] * len(samples),
            run_id=[run_id] * len(samples),
            attempt_id=["bench"] * len(samples),
            entry_id=[s.entry_id for s in samples],
            index=[s.index for s in samples],
            label=[s.label for s in samples],
            seed=[s.seed for s in samples],
            status=["ok"] * len(samples),
            kept=[True] * len(samples),
            drop_reasons=[[] for _ in samples],
        )
        table = pa.Table.from_pydict(cols, schema=SHARD_SCHEMA)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return buf.getvalue()

    def put(shard) -> None:
        store.put(shard_key(shard.shard_id), body(shard))

    committed = plan.shards[:commit]
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(put, committed):
            pass
    return {"planned": len(plan.shards), "populate_s": round(time.perf_counter() - t0, 1)}


def resume(manifest: Path, output: str, rows_per_shard: int, compare: list[int]) -> dict:
    """The measured step: prepare_run on the populated prefix, as `dermgen generate` does on resume."""
    from dermgen.run import prepare_run

    t0 = time.perf_counter()
    prepared = prepare_run(config_for(manifest, output, rows_per_shard))
    wall = time.perf_counter() - t0
    pending = getattr(prepared.scheduler, "pending", None)
    left = len(pending) if pending is not None else None
    from dermgen.rundir import RunDir

    rd = RunDir(prepared.store)  # the listing alone, timed again after the measured call
    t1 = time.perf_counter()
    listed = len(rd.listing().shards)
    t2 = time.perf_counter()
    summaries_s = {}  # the shard summaries alone, read `w` at a time (`--compare-workers`)
    for w in compare:
        t = time.perf_counter()
        rd.shard_summaries(workers=w)
        summaries_s[str(w)] = round(time.perf_counter() - t, 2)
    hwm = next(
        int(line.split()[1])
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    return {
        "resume_s": round(wall, 2),
        "committed": prepared.resumed_shards,
        "left": left,
        "peak_rss_mb": round(hwm / 1024, 1),
        "listing_s": round(t2 - t1, 2),
        "listed": listed,
        **({"summaries_s_by_workers": summaries_s} if summaries_s else {}),
    }


def child(step: str, env: dict[str, str], *args: str) -> dict:
    cmd = [sys.executable, __file__, "--step", step, *args]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{step} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def start_moto() -> tuple[subprocess.Popen, str]:
    """A moto S3 server on 127.0.0.1 in a child process; returns it and its endpoint."""
    code = (
        "import sys,time\nfrom moto.server import ThreadedMotoServer\n"
        "s=ThreadedMotoServer(ip_address='127.0.0.1',port=0,verbose=False);s.start()\n"
        "h,p=s.get_host_and_port();print(f'http://{h}:{p}',flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the server's request log
        text=True,
    )
    return proc, proc.stdout.readline().strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", default="100000", help="comma-separated committed shard counts")
    ap.add_argument("--rows-per-shard", type=int, default=ROWS_PER_SHARD)
    ap.add_argument("--threads", type=int, default=16, help="threads writing the shard objects")
    ap.add_argument("--quick", action="store_true", help="CI smoke: 500 shards")
    ap.add_argument(
        "--compare-workers",
        default="",
        help="also time the shard summaries alone with these read pools, e.g. 1,8",
    )
    ap.add_argument("--step", choices=["populate", "resume"], help=argparse.SUPPRESS)
    ap.add_argument("--manifest", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    ap.add_argument("--commit", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        sys.path.insert(0, str(REPO))
        manifest = Path(args.manifest)
        if args.step == "populate":
            out = populate(manifest, args.output, args.rows_per_shard, args.threads, args.commit)
        else:
            compare = [int(w) for w in args.compare_workers.split(",")] if args.compare_workers else []
            out = resume(manifest, args.output, args.rows_per_shard, compare)
        print(json.dumps(out))
        return
    sizes = [500] if args.quick else [int(s) for s in args.shards.split(",")]
    server, endpoint = start_moto()
    env = _env(endpoint)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="resume_scale_") as tmp:
            for n in sizes:
                manifest = write_manifest(Path(tmp), n, args.rows_per_shard)
                bucket = f"resume-{n}-{int(time.time())}"
                subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        f"import boto3; boto3.client('s3').create_bucket(Bucket='{bucket}')",
                    ],
                    env=env,
                    check=True,
                )
                common = ["--manifest", str(manifest), "--output", f"s3://{bucket}/run"]
                common += ["--rows-per-shard", str(args.rows_per_shard), "--threads", str(args.threads)]
                result = {"shards": n, "rows_per_shard": args.rows_per_shard}
                result.update(child("populate", env, *common, "--commit", str(n)))
                result.update(child("resume", env, *common, "--compare-workers", args.compare_workers))
                results.append(result)
                print(json.dumps(result), file=sys.stderr)
    finally:
        server.stdin.close()
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps({"cases": results}))


if __name__ == "__main__":
    main()
