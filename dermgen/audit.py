"""`dermgen audit`: how close generated images come to the reference (fine-tuning) images.

For every generated image (the ok rows of a run, local or s3://, or every image of a folder) the nearest
reference image, the copy similarity (0..1, the ``memorisation`` score, in any of the eight orientations)
and the distance ``1 - similarity``. The baseline is the same measure between the reference images
themselves (each against the others): "as close as two different real patients". It also finds the
near-duplicates among the kept generated images, whichever actor rendered them (the filter inside a run
compares each image with the images its own actor kept; this pass compares every kept image with all
earlier ones in sample order, and reports rather than removes). Writes into the output
folder ``audit.parquet`` (one row per generated image), ``baseline.parquet``, ``summary.json`` and a
self-contained ``index.html`` (histograms and the closest pairs side by side, images embedded).

Without ``--reference``, a run is audited against the training folder of its LoRA adapters: the run rows
record each adapter's sha256, the card beside the adapter file (``lora_card.json``) records the training
folder and its content hash.
"""

from __future__ import annotations

import base64
import heapq
import html
import io
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dermgen.errors import ConfigError
from dermgen.filters.base import check_image
from dermgen.filters.dedup import FingerprintIndex, fingerprint, iter_image_files, read_rgb
from dermgen.filters.reference_index import (
    ReferenceIndex,
    load_reference_index,
)
from dermgen.filters.rule import FilterConfig

__all__ = ["AUDIT_SCHEMA", "BASELINE_SCHEMA", "audit", "reference_from_adapters"]

log = logging.getLogger(__name__)

AUDIT_SCHEMA = pa.schema(
    [
        pa.field("image", pa.string(), nullable=False),
        pa.field("nearest_reference", pa.string()),
        pa.field("similarity", pa.float32(), nullable=False),
        pa.field("distance", pa.float32(), nullable=False),
        pa.field("orientation", pa.int8()),
        pa.field("above_threshold", pa.bool_(), nullable=False),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("duplicate_of", pa.string()),
        pa.field("duplicate_similarity", pa.float32()),
    ]
)
BASELINE_SCHEMA = pa.schema(
    [
        pa.field("reference", pa.string(), nullable=False),
        pa.field("nearest_other", pa.string()),
        pa.field("similarity", pa.float32(), nullable=False),
        pa.field("distance", pa.float32(), nullable=False),
    ]
)
MAX_BASELINE = 500  # reference images measured against the others (evenly spaced when there are more)
PAIRS_SHOWN = 24
THUMB = 160
ORIENTATION_NAMES = (
    "upright",
    "rotated 90",
    "rotated 180",
    "rotated 270",
    "mirrored",
    "mirrored, rotated 90",
    "mirrored, rotated 180",
    "mirrored, rotated 270",
)


@dataclass
class _Generated:
    key: str
    image: np.ndarray | None
    kept: bool = True


def _is_run(source: str) -> bool:
    from dermgen.rundir import RunDir

    return RunDir.looks_like_run(source)


def _run_images(uri: str):
    from PIL import Image

    from dermgen.rundir import RunDir, image_bytes, image_name

    rd = RunDir.open(uri)
    for _, table in rd.iter_tables(["sample_id", "status", "kept", "image"]):
        for row in table.to_pylist():
            img = row["image"]
            data = image_bytes(rd.store, img) if row["status"] == "ok" else None
            if data is None:
                continue
            key = image_name(img, row["sample_id"])
            rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            yield _Generated(key, rgb, bool(row["kept"]))


def _folder_images(root: Path):
    for path in iter_image_files(root):
        yield _Generated(path.relative_to(root).as_posix(), read_rgb(path))


def reference_from_adapters(uri: str) -> tuple[str, str]:
    """(training folder, its content sha256) from the cards of the LoRA adapters a run used.

    Raises ConfigError naming what is missing: no adapters, no card, or a folder that is not reachable.
    """
    from dermgen.rundir import RunDir
    from dermgen.train.lora_card import read_card

    rows = RunDir.open(uri).rows(["loras"]).column("loras").to_pylist()
    adapters = {(a["path"], a["sha256"]) for loras in rows for a in (loras or [])}
    if not adapters:
        raise ConfigError(f"audit: run {uri} used no LoRA adapter; name the reference set with --reference")
    problems = []
    for path, sha in sorted(adapters):
        try:
            card = read_card(path)
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: no readable lora_card.json beside it ({exc})")
            continue
        if sha and card.get("adapter", {}).get("sha256") not in (None, sha):
            problems.append(
                f"{path}: its card describes another adapter (sha256 {card['adapter']['sha256']})"
            )
            continue
        ref = (card.get("data") or {}).get("reference") or {}
        folder, digest = ref.get("path"), ref.get("sha256")
        if not folder:
            problems.append(f"{path}: its card records no training folder (made before cards did)")
        elif not Path(folder).is_dir():
            problems.append(f"{path}: training folder {folder} (sha256 {digest}) is not reachable here")
        else:
            return folder, digest
    raise ConfigError(
        "audit: no reference set given and none found through the run's adapters: "
        + "; ".join(problems)
        + "; pass --reference DIR"
    )


def _thumb_uri(image: np.ndarray) -> str:
    h, w = image.shape[:2]
    s = THUMB / max(h, w)
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(small[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode() if ok else ""


def _histogram_svg(series: dict[str, list[float]], threshold: float, bins: int = 25) -> str:
    """Overlaid histograms (share of each series per similarity bin) as an inline SVG."""
    width, height, pad = 640, 220, 30
    edges = np.linspace(0.0, 1.0, bins + 1)
    colours = {"generated vs reference": "#d9534f", "reference vs other references": "#337ab7"}
    hists = {
        name: np.histogram(np.clip(vals, 0, 1), edges)[0] / max(1, len(vals)) for name, vals in series.items()
    }
    top = max([float(h.max()) for h in hists.values()] + [1e-6])
    bw = (width - 2 * pad) / bins
    parts = [f'<svg width="{width}" height="{height}" role="img">']
    for j, (name, h) in enumerate(hists.items()):
        colour = colours.get(name, "#555")
        for i, v in enumerate(h):
            bh = (height - 2 * pad) * float(v) / top
            x = pad + i * bw + (bw / 2 if j else 0)
            parts.append(
                f'<rect x="{x:.1f}" y="{height - pad - bh:.1f}" width="{bw / 2:.1f}" height="{bh:.1f}" '
                f'fill="{colour}"><title>{html.escape(name)}: {v:.1%} in {edges[i]:.2f}-{edges[i + 1]:.2f}'
                "</title></rect>"
            )
        parts.append(
            f'<text x="{pad + 10}" y="{pad + 14 * j}" fill="{colour}" font-size="12">{html.escape(name)}</text>'
        )
    tx = pad + threshold * (width - 2 * pad)
    parts.append(
        f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{pad}" y2="{height - pad}" stroke="#000" stroke-dasharray="4"/>'
    )
    parts.append(
        f'<text x="{tx + 3:.1f}" y="{height - pad - 4}" font-size="11">threshold {threshold:.2f}</text>'
    )
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = pad + v * (width - 2 * pad)
        parts.append(f'<text x="{x - 8:.1f}" y="{height - 8}" font-size="11">{v:.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _stats(values: list[float], threshold: float) -> dict[str, Any]:
    if not values:
        return {"n": 0, "above_threshold": 0}
    a = np.asarray(values, np.float64)
    return {
        "n": len(values),
        "above_threshold": int((a > threshold).sum()),
        "max": round(float(a.max()), 4),
        "p50": round(float(np.percentile(a, 50)), 4),
        "p95": round(float(np.percentile(a, 95)), 4),
        "p99": round(float(np.percentile(a, 99)), 4),
    }


def _page(summary: dict, pairs: list[dict], svg: str) -> str:
    e = html.escape
    g, b = summary["generated"], summary["baseline"]
    cards = [
        ("card-images", "generated images", f"{g['n']:,d}"),
        ("card-above", f"closer than {summary['threshold']:.2f} (copies)", f"{g['above_threshold']:,d}"),
        ("card-references", "reference images", f"{summary['references']:,d}"),
        ("card-duplicates", "near-duplicates among kept images", f"{summary['duplicates_within']:,d}"),
        (
            "card-baseline-above",
            "reference pairs above threshold",
            f"{b['above_threshold']:,d} / {b['n']:,d}",
        ),
    ]
    rows = []
    for p in pairs:
        rows.append(
            f'<tr class="pair"><td><img alt="generated {e(p["image"])}" src="{p["gen_uri"]}"><br>{e(p["image"])}</td>'
            f'<td><img alt="reference {e(p["reference"])}" src="{p["ref_uri"]}"><br>{e(p["reference"])}</td>'
            f'<td class="{"hit" if p["above"] else ""}">{p["similarity"]:.3f}<br>{e(p["orientation"])}</td></tr>'
        )
    stat_rows = "".join(
        f"<tr><td>{e(name)}</td>"
        + "".join(f"<td>{s.get(k, '-')}</td>" for k in ("n", "p50", "p95", "p99", "max", "above_threshold"))
        + "</tr>"
        for name, s in (("generated vs nearest reference", g), ("reference vs nearest other reference", b))
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dermgen memorisation audit</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}} .cards{{display:flex;gap:12px;flex-wrap:wrap}}
.card{{border:1px solid #ccc;border-radius:6px;padding:10px 14px;min-width:180px}} .card .v{{font-size:24px;font-weight:600}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ddd;padding:4px 8px;text-align:center;vertical-align:top}}
td.hit{{background:#f8d7da;font-weight:600}} img{{max-width:{THUMB}px}}
</style></head><body>
<h1>Memorisation audit</h1>
<p>Generated: {e(summary["source"])}<br>Reference: {e(summary["reference"])} (sha256 {e(summary["reference_sha256"][:16])}…)</p>
<section id="counts"><div class="cards">{"".join(f'<div class="card" id="{i}"><div class="k">{e(k)}</div><div class="v">{v}</div></div>' for i, k, v in cards)}</div></section>
<section id="distribution"><h2>Copy similarity to the nearest image</h2>
<p>1 = an exact copy (in any flip or rotation); different real patients' images stay below the threshold.</p>
{svg}
<table><tr><th></th><th>n</th><th>p50</th><th>p95</th><th>p99</th><th>max</th><th>above threshold</th></tr>{stat_rows}</table></section>
<section id="pairs"><h2>Closest pairs</h2>
<table><tr><th>generated</th><th>nearest reference</th><th>similarity, orientation</th></tr>{"".join(rows)}</table></section>
</body></html>
"""


def audit(
    source: str,
    output: str | os.PathLike[str],
    reference: str | os.PathLike[str] | None = None,
    *,
    threshold: float | None = None,
    pairs: int = PAIRS_SHOWN,
    max_baseline: int = MAX_BASELINE,
) -> dict[str, Any]:
    """Write the leakage report of ``source`` (run or folder) against ``reference`` into ``output``."""
    start = time.perf_counter()
    source = str(source)
    is_run = _is_run(source)
    if not is_run and not Path(source).is_dir():
        raise ConfigError(f"audit: input {source!r} is not a folder of images or a dermgen run")
    expected_sha = None
    if reference is None:
        if not is_run:
            raise ConfigError("audit: a folder of images needs --reference DIR_OR_RUN")
        reference, expected_sha = reference_from_adapters(source)
    bounds = FilterConfig().thresholds()
    if threshold is None:
        threshold = float(bounds["memorisation"] or 0.89)
    dup_threshold = float(bounds["duplicate"] or 0.89)
    duplicates = FingerprintIndex(both_ways=True)
    ref: ReferenceIndex = load_reference_index(reference)
    if expected_sha and expected_sha != ref.sha256:
        log.warning(
            "audit: training folder %s changed since the adapter was trained (card sha256 %s, now %s)",
            reference,
            expected_sha,
            ref.sha256,
        )
    index = ref.index
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    top: list[tuple[float, int, np.ndarray]] = []
    unreadable = 0
    for item in _run_images(source) if is_run else _folder_images(Path(source)):
        if item.image is None:
            unreadable += 1
            continue
        try:
            fp = fingerprint(check_image(item.image))
        except ValueError:
            unreadable += 1
            continue
        m = index.match(fp, gate=-1.0)
        dup = None
        if item.kept:  # near-duplicates among the kept images, whichever actor rendered them
            dup = duplicates.match(fp)
            duplicates.add(fp, item.key)
        rows.append(
            {
                "image": item.key,
                "nearest_reference": m.label,
                "similarity": m.similarity,
                "distance": 1.0 - m.similarity,
                "orientation": m.orientation if m.label is not None else None,
                "above_threshold": m.similarity > threshold,
                "kept": item.kept,
                "duplicate_of": dup.label if dup is not None and dup.similarity > dup_threshold else None,
                "duplicate_similarity": dup.similarity if dup is not None else None,
            }
        )
        heapq.heappush(top, (m.similarity, len(rows), item.image))  # keep the images of the closest only
        if len(top) > pairs:
            heapq.heappop(top)
    # baseline: each reference (evenly spaced subset) against all the others
    n_ref = len(index)
    picks = np.unique(np.linspace(0, n_ref - 1, min(n_ref, max_baseline)).astype(int)) if n_ref > 1 else []
    labels = index.labels
    base_rows = []
    for i in picks:
        m = index.match(index.entry(int(i)), gate=-1.0, exclude=int(i))
        base_rows.append(
            {
                "reference": labels[i],
                "nearest_other": m.label,
                "similarity": m.similarity,
                "distance": 1.0 - m.similarity,
            }
        )
    pq.write_table(pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA), out / "audit.parquet")
    pq.write_table(pa.Table.from_pylist(base_rows, schema=BASELINE_SCHEMA), out / "baseline.parquet")
    gen_sims = [r["similarity"] for r in rows]
    summary = {
        "source": source,
        "reference": str(ref.root),
        "reference_sha256": ref.sha256,
        "references": n_ref,
        "reference_index_cached": ref.cached,
        "threshold": threshold,
        "generated": _stats(gen_sims, threshold),
        "baseline": _stats([r["similarity"] for r in base_rows], threshold),
        "duplicates_within": sum(1 for r in rows if r["duplicate_of"]),
        "unreadable": unreadable,
        "output": str(out),
    }
    shown = []
    for _, n, gen in sorted(top, key=lambda t: (-t[0], t[1])):
        r = rows[n - 1]
        ref_img = read_rgb(ref.path(r["nearest_reference"])) if r["nearest_reference"] else None
        if ref_img is None:
            continue
        shown.append(
            {
                "image": r["image"],
                "reference": r["nearest_reference"],
                "similarity": r["similarity"],
                "orientation": ORIENTATION_NAMES[r["orientation"] or 0],
                "above": r["above_threshold"],
                "gen_uri": _thumb_uri(gen),
                "ref_uri": _thumb_uri(ref_img),
            }
        )
    svg = _histogram_svg(
        {
            "generated vs reference": gen_sims,
            "reference vs other references": [r["similarity"] for r in base_rows],
        },
        threshold,
    )
    (out / "index.html").write_text(_page(summary, shown, svg), encoding="utf-8")
    summary["seconds"] = round(time.perf_counter() - start, 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    log.info(
        "audit: %d images, %d above %.2f; report in %s",
        len(rows),
        summary["generated"]["above_threshold"],
        threshold,
        out,
    )
    return summary
