"""Plan scale: `dermgen generate --dry-run` on the 6k manifest scaled to millions of images, and on a manifest
with 250k entries, each timed as a fresh process (wall time, and that child's CPU time and peak RSS via
os.wait4: the dry run is one thread, so on a machine shared with other work its CPU time is what its wall time
would be on an idle core, while wall time is inflated by waiting for a core).

Cases (`--cases`, comma-separated):
  6k          the shipped manifest as is (the fixed cost: interpreter, imports, validation)
  1M/10M/100M the 6k manifest's entries with counts scaled to that many kept images; an entry may ask for at
              most 10M images, so larger totals split each entry into equal copies (`<id>_c<k>`)
  250k-entries 250,000 entries of 4 images each (1M images, ~40 MB of block-style YAML)
  250k-entries-json  the same manifest written as JSON (a subset of YAML): dermgen parses such a file
              with the json module, the route for machine-made manifests of this size

    python benchmarks/plan_scale.py                 # every case (a few minutes on 2 idle cores)
    python benchmarks/plan_scale.py --quick         # CI smoke: 6k, 100k and a 2k-entry manifest

Targets (issue: plans in O(shards)): 10M <= 10 s and <= 1 GB; 100M <= 60 s and <= 2 GB; 250k entries <= 20 s.
Prints JSON as its last line: one object per case with images, entries, shards, yaml_mb, wall_s, cpu_s,
peak_rss_mb, and the target with `met` (by wall time) and `met_cpu` (by CPU time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
MANIFEST_6K = REPO / "manifests" / "derm_t2im_6k.yaml"
MAX_ENTRY_COUNT = 10_000_000  # the manifest model's limit per entry
TARGETS = {
    "10M": (10.0, 1024),
    "100M": (60.0, 2048),
    "250k-entries": (20.0, None),
    "250k-entries-json": (20.0, None),
}
SITES = ["scalp", "face", "neck", "chest", "back", "abdomen", "upper arm", "forearm", "hand", "thigh", "shin"]
TONES = ["I", "II", "III", "IV", "V", "VI"]


def scaled_manifest(images: int, out: Path) -> Path:
    """The 6k manifest with counts scaled to about `images` kept images (entries split into copies)."""
    doc = yaml.safe_load(MANIFEST_6K.read_text())
    total = sum(e["count"] for e in doc["entries"])
    entries = []
    for e in doc["entries"]:
        want = e["count"] * images // total
        copies = max(1, math.ceil(want / MAX_ENTRY_COUNT))
        for k in range(copies):
            n = want // copies + (1 if k < want % copies else 0)
            entries.append({**e, "id": e["id"] if copies == 1 else f"{e['id']}_c{k}", "count": n})
    doc["entries"] = entries
    doc["name"] = f"{doc['name']}-x{images}"
    path = out / f"scaled_{images}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _entries(n: int, count: int):
    for i in range(n):
        label = "benign" if i % 2 == 0 else "malignant"
        site, tone = SITES[i % len(SITES)], TONES[(i // len(SITES)) % len(TONES)]
        yield {
            "id": f"{label}_{site.replace(' ', '_')}_{tone}_{i:07d}",
            "label": label,
            "prompt": f"{label} skin lesion on the {site}, Fitzpatrick type {tone}, dermoscopy, variant {i}",
            "count": count,
            "tags": [site.replace(" ", "_"), f"fitzpatrick_{tone}"],
        }


def many_entries_manifest(n: int, out: Path, count: int = 4, as_json: bool = False) -> Path:
    """`n` entries (diagnosis x site x tone x variant): block-style YAML text, or the same document as JSON.

    Written one entry at a time: this process must stay small, because a child started with vfork (as
    subprocess does) reports this process's peak RSS as its own when that is larger.
    """
    head = {
        "name": f"many-entries-{n}",
        "description": "a manifest with many small entries (planning benchmark)",
        "model": "tiny",
        "defaults": {"samplers": ["Euler", "Euler a", "PLMS"], "steps": "20-26", "cfg_scale": 7, "size": 512},
    }
    path = out / f"entries_{n}.{'json' if as_json else 'yaml'}"
    with path.open("w") as fh:
        if as_json:  # JSON is YAML too: dermgen parses it with the json module
            fh.write(json.dumps(head, indent=1)[: -len("\n}")] + ',\n "entries": [\n')
            for i, e in enumerate(_entries(n, count)):
                fh.write(("  " if i == 0 else ",\n  ") + json.dumps(e))
            fh.write("\n ]\n}\n")
            return path
        fh.write("".join(f"{k}: {head[k]}\n" for k in ("name", "description", "model")))
        defaults = head["defaults"]
        fh.write(f"defaults:\n  samplers: [{', '.join(defaults['samplers'])}]\n")
        fh.write("".join(f"  {k}: {defaults[k]}\n" for k in ("steps", "cfg_scale", "size")))
        fh.write("entries:\n")
        for e in _entries(n, count):
            fh.write(
                f'  - id: {e["id"]}\n    label: {e["label"]}\n    prompt: "{e["prompt"]}"\n'
                f"    count: {e['count']}\n    tags: [{', '.join(e['tags'])}]\n"
            )
    return path


def dry_run(manifest: Path, out: Path) -> dict:
    """Run `dermgen generate --dry-run` as a child process: wall time, its peak RSS, the planned totals."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    log = out / "dry_run.out"
    cmd = [sys.executable, "-m", "dermgen", "generate", "--manifest", str(manifest), "--dry-run"]
    cmd += ["--model", "tiny", "--output", str(out / "run")]
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    text = log.read_bytes()[-4000:].decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"dry run of {manifest.name} failed:\n{text}")
    m = re.search(r"total: ([\d,]+) planned kept images .* in (\d+) shards", text)
    with open(log, "rb") as fh:  # "manifest NAME: N entries, model M"
        head = re.search(rb": (\d+) entries, model ", fh.readline())
    return {
        "entries": int(head.group(1)) if head else None,
        "images": int(m.group(1).replace(",", "")) if m else None,
        "shards": int(m.group(2)) if m else None,
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
    }


def run_case(name: str, out: Path) -> dict:
    t0 = time.perf_counter()
    number = re.fullmatch(r"(\d+)([kM])(-entries)?(-json)?", name)
    if not number:
        raise SystemExit(f"unknown case {name!r}: expected e.g. 6k, 10M or 250k-entries")
    n = int(number.group(1)) * (1000 if number.group(2) == "k" else 1_000_000)
    if number.group(3):
        manifest = many_entries_manifest(n, out, as_json=bool(number.group(4)))
    elif name == "6k":
        manifest = MANIFEST_6K
    else:
        manifest = scaled_manifest(n, out)
    made_s = time.perf_counter() - t0
    result = {"case": name, "yaml_mb": round(manifest.stat().st_size / 2**20, 3)}
    result.update(dry_run(manifest, out))
    result["manifest_written_s"] = round(made_s, 2)
    target = TARGETS.get(name)
    if target:
        max_s, max_mb = target
        result["target"] = {"wall_s": max_s, "peak_rss_mb": max_mb}
        rss_ok = max_mb is None or result["peak_rss_mb"] <= max_mb
        result["met"] = result["wall_s"] <= max_s and rss_ok
        result["met_cpu"] = result["cpu_s"] <= max_s and rss_ok
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cases",
        default="6k,1M,10M,100M,250k-entries-json,250k-entries",
        help="comma-separated cases (see above)",
    )
    ap.add_argument("--quick", action="store_true", help="CI smoke: 6k, 100k images, 2k entries")
    args = ap.parse_args()
    cases = ["6k", "100k", "2k-entries", "2k-entries-json"] if args.quick else args.cases.split(",")
    results = []
    with tempfile.TemporaryDirectory(prefix="plan_scale_") as tmp:
        for name in cases:
            results.append(run_case(name, Path(tmp)))
            print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps({"cases": results, "all_met": all(r.get("met", True) for r in results)}))


if __name__ == "__main__":
    main()
