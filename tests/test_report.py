"""The HTML run report: content, self-containment, S3 input, empty and filter-off runs, real rendering.

The rendering tests open the page in headless Chromium (Debian `chromium` + `chromium-driver`) and check
that it loads with no console errors and that every image decodes.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from dermgen.errors import ConfigError, StoreError
from dermgen.hashing import sha256_bytes
from dermgen.manifest import load_manifest, manifest_hash
from dermgen.plan import plan_run
from dermgen.provenance import environment
from dermgen.report import THUMBS_PER_SHEET, build_report, load_run
from dermgen.schema import empty_scores
from dermgen.shards import RUN_JSON, SUMMARY_JSON, commit_shard, image_key
from dermgen.store import open_store
from dermgen.verify import verify_run

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFEST = REPO_ROOT / "manifests" / "derm_t2im_6k.yaml"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

# Toy keep rules for the fixture: score name -> (threshold, drop if above)
RULES = {"ink": 0.8, "blur": 0.85, "hair": 0.9}


def make_scored_run(
    root: Path, samples_dir: Path, *, per_label: int = 30, shard_size: int = 8, lose_png: int | None = None
) -> dict:
    """A realistic filtered run built from the real sample PNGs: scores filled, some images dropped
    with reasons, one failed sample, a summary with a timeline. Rows match the plan in run.json.
    `lose_png`: the n-th sample's row keeps only the path of its PNG, which is never written.
    Returns the expected counts."""
    manifest = load_manifest(MANIFEST)
    plan = plan_run(manifest, run_seed=7, limit=2 * per_label, size=512, shard_size=shard_size)
    store = open_store(root)
    binding = {
        "manifest_sha256": manifest_hash(manifest),
        "model": "sha256:" + "ab" * 32,
        "loras": [{"path": "adapters/derm.safetensors", "scale": 0.8, "sha256": "cd" * 32}],
        "run_seed": 7,
        "limit": 2 * per_label,
        "size": 512,
        "shard_size": shard_size,
        "block": plan.block,
        "cap_factor": 3.0,
        "filter": {"spec": "default", "overrides": {"ink": 0.8}, "reference_dir": None},
    }
    run_json = {
        "run_id": "scoredrun0000001",
        "binding": binding,
        "created_at": "2026-01-02T03:04:05+00:00",
        "config": {"model": "derm-t2im", "batch_size": 8, "dtype": "fp16", "device": None, "size": 512},
        "manifest": manifest.model_dump(mode="json"),
        "targets": plan.targets,
        "targets_by_label": plan.targets_by_label(),
        "environment": environment(),
    }
    store.put(RUN_JSON, json.dumps(run_json).encode())
    pngs = {
        label: [p.read_bytes() for p in sorted((samples_dir / label).glob("*.png"))]
        for label in ("benign", "malignant")
    }
    rng = np.random.default_rng(0)
    t0 = datetime(2026, 1, 2, 3, 5, tzinfo=timezone.utc)
    counts = Counter()
    reasons = Counter()
    used = Counter()
    n = 0
    for shard in plan.shards:
        rows, written = [], []
        for s in shard.samples:
            n += 1
            png = pngs[s.label][used[s.label] % len(pngs[s.label])]
            used[s.label] += 1
            scores = empty_scores()
            for name in ("ink", "blur", "contrast", "hair", "lesion_area"):
                scores[name] = float(rng.beta(2, 5))
            for name in RULES:
                if rng.random() < 0.15:  # a few clear outliers
                    scores[name] = float(rng.uniform(0.9, 1.0))
            drop = [f"{k}>{v}" for k, v in RULES.items() if scores[k] > v]
            failed = n == 5
            kept = not drop and not failed
            row = {
                "sample_id": s.sample_id,
                "shard_id": shard.shard_id,
                "run_id": run_json["run_id"],
                "attempt_id": "attempt00001",
                "entry_id": s.entry_id,
                "index": s.index,
                "label": s.label,
                "tags": list(s.tags),
                "prompt": s.prompt,
                "negative_prompt": s.negative_prompt,
                "seed": s.seed,
                "sampler": s.sampler,
                "steps": s.steps,
                "cfg_scale": s.cfg_scale,
                "width": 512,
                "height": 512,
                "batch_size": 8,
                "loras": [
                    {"name": "derm", "path": "adapters/derm.safetensors", "scale": 0.8, "sha256": "cd" * 32}
                ],
                "model_id": "derm-t2im",
                "model_sha256": "ab" * 32,
                "model_hash": "abababab",
                "status": "failed" if failed else "ok",
                "error": "CUDA out of memory" if failed else None,
                "image": None,
                "image_sha256": None,
                "kept": kept,
                "drop_reasons": ["failed"] if failed else drop,
                "scores": empty_scores() if failed else scores,
                "timings": {"generate_s": 0.5, "encode_s": 0.01, "filter_s": 0.02},
                "actor": f"gen-{n % 2}",
                "node": "node-a",
                "device": "NVIDIA A10G",
                "created_at": t0 + timedelta(seconds=3 * n),
            }
            if not failed:
                key = image_key(s.sample_id, s.label, row["attempt_id"], kept)
                row["image"] = {"bytes": png, "path": key}
                row["image_sha256"] = sha256_bytes(png)
                if n == lose_png:
                    row["image"] = {"bytes": None, "path": key}
                else:
                    store.put(key, png)
                    written.append(key)
            counts["failed" if failed else "kept" if kept else "dropped"] += 1
            counts[f"kept-{s.label}"] += kept
            reasons.update(row["drop_reasons"])
            rows.append(row)
        assert commit_shard(store, shard.shard_id, rows, written).committed
    summary = {
        "run_id": run_json["run_id"],
        "complete": False,
        "finished_at": "2026-01-02T03:09:00+00:00",
        "elapsed_s": 3.0 * n,
        "images_per_s": 1 / 3,
        "timeline": [[3.0 * i, i] for i in range(8, n + 1, 8)],
    }
    store.put(SUMMARY_JSON, json.dumps(summary).encode())
    return {
        "rows": n,
        "shards": len(plan.shards),
        "counts": counts,
        "reasons": reasons,
        "target": plan.total_target,
    }


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory, samples_dir) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("scored") / "run"
    return root, make_scored_run(root, samples_dir)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module, with console logging enabled."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(
            f"headless report test needs Chromium at {CHROMIUM} and {CHROMEDRIVER}: "
            "apt-get install chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def render(driver, index: Path, screenshot: Path) -> dict:
    """Load the page; return console entries, image sizes, section texts, and save a full-page shot."""
    driver.get(index.as_uri())
    driver.execute_script("return document.readyState")  # waits for load
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.src.slice(0, 5)])"
    )
    sections = driver.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('section')).map(s => [s.id, s.innerText]))"
    )
    cards = driver.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('.card'))"
        ".map(c => [c.id, c.querySelector('.v').innerText]))"
    )
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 100, 16000))
    driver.save_screenshot(str(screenshot))
    driver.set_window_size(1400, 1000)
    logs = driver.get_log("browser")
    return {"images": images, "sections": sections, "cards": cards, "logs": logs}


def _img_srcs(page: str) -> list[str]:
    return re.findall(r'<img[^>]* src="([^"]*)"', page)


# ------------------------------------------------------------------------------------------ page content


def test_scored_run_report_content(scored_run, tmp_path):
    root, exp = scored_run
    assert verify_run(open_store(root)).ok  # the fixture is a consistent run, not just any rows
    out = tmp_path / "rep"
    path = build_report(str(root), str(out))
    assert path == str(out / "index.html")
    page = Path(path).read_text()
    # self-contained: every image is a data URI, and nothing references the network or other files
    srcs = _img_srcs(page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert not re.search(r'(src|href)="(https?:|//|file:)', page)
    # the only script is the review section's, inline (no src), and it loads nothing
    assert page.count("<script") == 1 and "<script>" in page and "<script src" not in page
    assert not re.search(r"fetch\(|XMLHttpRequest|import\(", page)
    # sections
    for sid in (
        "overview",
        "counts",
        "drops",
        "scores",
        "throughput",
        "kept-images",
        "dropped-images",
        "provenance",
    ):
        assert f'id="{sid}"' in page
    # overview numbers
    c = exp["counts"]
    assert f"{c['kept']:,d} / {exp['target']:,d}" in page
    assert f"{c['dropped']:,d} (" in page
    # every drop reason is listed with its count
    for reason, n in exp["reasons"].items():
        assert re.search(rf"<td class=l>{re.escape(html.escape(reason))}</td><td>{n:,d}</td>", page), reason
    # score histograms only for scores that have values
    assert 'alt="score ink"' in page and 'alt="score blur"' in page
    assert 'alt="score clip"' not in page and 'alt="score memorisation"' not in page
    # provenance
    for text in ("scoredrun0000001", "derm-t2im", "abababab", "adapters/derm.safetensors", "run seed"):
        assert text in page
    assert re.search(r"<td>run seed</td><td>(\d+)</td>", page).group(1) == "7"


def test_contact_sheets_are_bounded_balanced_and_deterministic(scored_run, tmp_path):
    root, exp = scored_run
    store = open_store(root)
    data = load_run(store, per_sheet=10)
    assert len(data.kept_sheet) == 10
    assert Counter(t.row["label"] for t in data.kept_sheet) == {"benign": 5, "malignant": 5}
    assert all(t.row["kept"] for t in data.kept_sheet)
    assert all(not t.row["kept"] and t.row["drop_reasons"] for t in data.dropped_sheet)
    assert len(data.dropped_sheet) == min(10, exp["counts"]["dropped"])
    again = load_run(store, per_sheet=10)
    assert [t.row["sample_id"] for t in again.kept_sheet] == [t.row["sample_id"] for t in data.kept_sheet]
    # thumbnails are small JPEGs of the right size
    from PIL import Image

    raw = base64.b64decode(data.kept_sheet[0].uri.split(",", 1)[1])
    with Image.open(io.BytesIO(raw)) as im:
        assert im.format == "JPEG" and im.size == (128, 128)
    full = load_run(store)
    assert len(full.kept_sheet) == min(THUMBS_PER_SHEET, exp["counts"]["kept"])


def test_dropped_images_show_their_reasons(scored_run, tmp_path):
    root, _ = scored_run
    page = Path(build_report(str(root), str(tmp_path / "r"), per_sheet=6)).read_text()
    dropped = page.split('id="dropped-images"', 1)[1].split("</section>", 1)[0]
    figures = re.findall(r"<figcaption>(.*?)</figcaption>", dropped)
    assert len(figures) == 6
    assert all(re.search(r'class="r">(ink|blur|hair)&gt;0\.\d+', f) for f in figures)


def test_empty_run_and_defaults(tmp_path, scored_run):
    root, _ = scored_run
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(root / RUN_JSON, empty / RUN_JSON)
    path = build_report(str(empty))  # default output: <run>/report/index.html
    assert path == str(empty / "report" / "index.html")
    page = Path(path).read_text()
    assert "No committed shards yet" in page and "No kept images." in page
    assert "no summary.json" in page
    assert "scoredrun0000001" in page


def test_missing_run_and_s3_without_output(tmp_path):
    with pytest.raises(StoreError, match="no run.json"):
        build_report(str(tmp_path / "nothing"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="--output"):
        build_report("s3://some-bucket/run")


def test_unreadable_image_is_reported_not_broken(samples_dir, tmp_path):
    root = tmp_path / "run"
    make_scored_run(root, samples_dir, per_label=4, shard_size=4, lose_png=1)
    data = load_run(open_store(root))
    assert sum(data.unreadable.values()) == 1
    assert all(t.uri for t in data.kept_sheet + data.dropped_sheet)
    page = Path(build_report(str(root), str(tmp_path / "rep"))).read_text()
    assert "1 sampled image(s) could not be read" in page
    assert all(src.startswith("data:image/") and len(src) > 100 for src in _img_srcs(page))


def test_unwritable_output(scored_run, tmp_path):
    root, _ = scored_run
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="not writable"):
        build_report(str(root), str(blocker / "report"))


def test_report_reads_an_s3_run(scored_run, s3_bucket, tmp_path):
    root, exp = scored_run
    s3 = open_store(f"s3://{s3_bucket}/runs/scored")
    local = open_store(root)
    for key in local.list():
        s3.put(key, local.get(key))
    path = build_report(f"s3://{s3_bucket}/runs/scored", str(tmp_path / "rep"))
    page = Path(path).read_text()
    assert f"{exp['counts']['kept']:,d} / {exp['target']:,d}" in page
    assert f"s3://{s3_bucket}/runs/scored" in page
    # and the report itself can be written to S3
    url = build_report(f"s3://{s3_bucket}/runs/scored", f"s3://{s3_bucket}/reports/scored")
    assert url == f"s3://{s3_bucket}/reports/scored/index.html"
    assert open_store(f"s3://{s3_bucket}/reports/scored").get("index.html").startswith(b"<!DOCTYPE html>")


def test_filter_off_tiny_run(tiny_run, tmp_path):
    summary = json.loads((tiny_run / SUMMARY_JSON).read_text())
    page = Path(build_report(str(tiny_run), str(tmp_path / "rep"))).read_text()
    assert "No scores recorded" in page
    assert "The filter was off" in page
    assert f"{summary['kept_total']:,d} / {summary['target']:,d}" in page
    assert 'alt="throughput"' in page
    assert len(re.findall(r'<figure class="t"', page)) == min(THUMBS_PER_SHEET, summary["kept_total"])


# ------------------------------------------------------------------------------------ headless Chromium


def _check_rendered(result: dict) -> None:
    severe = [e for e in result["logs"] if e.get("level") == "SEVERE"]
    assert not severe, severe
    assert result["images"], "no <img> on the page"
    broken = [i for i in result["images"] if not i[1] or i[2] <= 0]
    assert not broken, broken
    assert all(i[3] == "data:" for i in result["images"])


@pytest.mark.slow
def test_report_renders_in_chromium(browser, scored_run, tmp_path):
    root, exp = scored_run
    index = Path(build_report(str(root), str(tmp_path / "rep")))
    result = render(browser, index, tmp_path / "report.png")
    _check_rendered(result)
    c = exp["counts"]
    assert result["cards"]["card-kept"] == f"{c['kept']:,d} / {exp['target']:,d}"
    assert result["cards"]["card-failed"] == f"{c['failed']:,d}"
    assert result["cards"]["card-generated"] == f"{exp['rows']:,d}"
    assert result["cards"]["card-shards-committed"] == f"{exp['shards']} / {exp['shards']} planned"
    thumbs = [i for i in result["images"] if i[0].startswith(("benign", "malignant", "small_"))]
    sheets = min(THUMBS_PER_SHEET, c["kept"]) + min(THUMBS_PER_SHEET, c["dropped"])
    assert len(thumbs) == sheets + c["kept"] + c["dropped"]  # + the review section: every rendered image
    plots = {i[0] for i in result["images"]} - {i[0] for i in thumbs}
    assert {"kept vs dropped per entry", "drop reasons", "throughput", "score ink"} <= plots
    assert "benign" in result["sections"]["counts"] and "malignant" in result["sections"]["counts"]
    for reason in exp["reasons"]:
        assert reason in result["sections"]["drops"]
    assert "NVIDIA A10G" in result["sections"]["provenance"]
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.slow
def test_tiny_run_report_renders_in_chromium(browser, tiny_run, tmp_path):
    index = Path(build_report(str(tiny_run), str(tmp_path / "rep")))
    result = render(browser, index, tmp_path / "tiny.png")
    _check_rendered(result)
    summary = json.loads((tiny_run / SUMMARY_JSON).read_text())
    assert result["cards"]["card-kept"] == f"{summary['kept_total']:,d} / {summary['target']:,d}"
    assert "No dropped images" in result["sections"]["dropped-images"]
    for label, agg in summary["labels"].items():
        assert re.search(
            rf"{label}\s+{agg['target']}\s+{agg['generated']}\s+{agg['kept']}", result["sections"]["counts"]
        )


@pytest.mark.slow
def test_empty_run_renders_in_chromium(browser, scored_run, tmp_path):
    root, _ = scored_run
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(root / RUN_JSON, empty / RUN_JSON)
    result = render(browser, Path(build_report(str(empty))), tmp_path / "empty.png")
    assert not [e for e in result["logs"] if e.get("level") == "SEVERE"]
    assert result["images"] == []
    assert result["cards"]["card-kept"] == "0 / 60"
