"""The review section of `dermgen report`, end to end in headless Chromium: clicks flip decisions, the
downloaded labels hold them, `dermgen filter calibrate` fits them and `dermgen filter --filter` uses the
profile on the run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from test_report import CHROMEDRIVER, CHROMIUM, make_scored_run

from dermgen.cli import main
from dermgen.report import build_report, load_run
from dermgen.rundir import RunDir
from dermgen.store import open_store

INK_LINE = 0.35  # the person drops every image whose ink is above this (the run's filter used 0.8)


@pytest.fixture
def download_browser(tmp_path):
    """A headless Chromium that saves downloads into tmp_path/downloads without asking."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(
            f"needs Chromium at {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    yield driver, downloads
    driver.quit()


def _show(driver, element) -> None:
    """Scroll an element to the middle of the window (the sticky nav covers the top)."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)


def _wait_for_file(folder: Path, pattern: str, timeout: float = 20) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = [p for p in folder.glob(pattern) if not p.name.endswith(".crdownload")]
        if done:
            return done[0]
        time.sleep(0.2)
    raise AssertionError(f"no {pattern} in {folder}: {list(folder.iterdir())}")


def test_review_section_holds_every_image_of_a_small_run_and_samples_a_large_one(samples_dir, tmp_path):
    root = tmp_path / "run"
    exp = make_scored_run(root, samples_dir, per_label=10, shard_size=8)
    data = load_run(open_store(root))
    ok = exp["counts"]["kept"] + exp["counts"]["dropped"]
    assert data.reviewable == ok and len(data.review) == ok  # small run: every rendered image
    small = load_run(open_store(root), review=8)
    assert len(small.review) == 8 and data.reviewable == ok
    assert sum(t.row["kept"] for t in small.review) == 4  # half kept, half dropped
    again = load_run(open_store(root), review=8)
    assert [t.row["sample_id"] for t in again.review] == [t.row["sample_id"] for t in small.review]
    assert all(t.uri and t.uri.startswith("data:image/jpeg;base64,") for t in small.review)


def test_review_clicks_download_calibrate_and_filter_end_to_end(
    samples_dir, tmp_path, download_browser, capsys
):
    driver, downloads = download_browser
    root = tmp_path / "run"
    exp = make_scored_run(root, samples_dir, per_label=15, shard_size=8)
    page = Path(build_report(str(root), str(tmp_path / "rep")))
    text = page.read_text()
    assert "<script src" not in text and not any(f'src="{s}' in text for s in ("http", "//", "file:"))

    driver.get(page.as_uri())
    figs = driver.find_elements("css selector", "#review figure.rv")
    assert len(figs) == exp["counts"]["kept"] + exp["counts"]["dropped"]
    rows = {
        r["sample_id"]: r for r in RunDir(open_store(root)).rows(["sample_id", "kept", "scores"]).to_pylist()
    }
    wanted, flipped = {}, 0
    for f in figs:
        sid = f.get_attribute("data-sid")
        row = rows[sid]
        assert f.get_attribute("data-kept") == ("1" if row["kept"] else "0")
        want = (
            row["scores"]["ink"] <= INK_LINE
            and row["scores"]["blur"] <= 0.85
            and row["scores"]["hair"] <= 0.9
        )
        wanted[sid] = want
        if want != bool(row["kept"]):
            _show(driver, f)
            f.click()
            flipped += 1
            assert "changed" in f.get_attribute("class")
            assert f.get_attribute("data-kept") == ("1" if want else "0")
    assert flipped >= 3
    one = figs[0]  # a double click flips back
    _show(driver, one)
    before = one.get_attribute("data-kept")
    one.click()
    one.click()
    assert one.get_attribute("data-kept") == before
    counts = driver.find_element("id", "review-counts").text
    assert f"{flipped} changed from the filter" in counts and f"{sum(wanted.values())} keep" in counts
    button = driver.find_element("id", "review-download")
    _show(driver, button)
    button.click()
    labels_file = _wait_for_file(downloads, "labels-*.json")
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]

    doc = json.loads(labels_file.read_text())
    assert (
        doc["dermgen_labels"] == 1
        and doc["run"] == open_store(root).uri
        and doc["run_id"] == "scoredrun0000001"
    )
    got = {lb["sample_id"]: lb for lb in doc["labels"]}
    assert {sid: lb["kept"] for sid, lb in got.items()} == wanted
    assert all(lb["filter_kept"] == bool(rows[sid]["kept"]) for sid, lb in got.items())
    assert all((root / lb["path"]).is_file() for lb in got.values())
    assert all(abs(lb["scores"]["ink"] - rows[sid]["scores"]["ink"]) < 1e-6 for sid, lb in got.items())

    profile = tmp_path / "profile.yaml"
    assert main(["filter", "calibrate", str(labels_file), "--output", str(profile)]) == 0
    out = capsys.readouterr().out
    before_after = [
        float(x)
        for x in out.split("agreement with the labels: before ")[1]
        .split("\n")[0]
        .replace(" after ", "")
        .split(",")
    ]
    assert before_after[1] > before_after[0] and before_after[1] == 1.0
    fitted = yaml.safe_load(profile.read_text())["thresholds"]
    inks_kept = [lb["scores"]["ink"] for lb in got.values() if lb["kept"]]
    inks_high = [lb["scores"]["ink"] for lb in got.values() if lb["scores"]["ink"] > INK_LINE]
    assert max(inks_kept) <= fitted["ink_max"] < min(inks_high)

    decisions = tmp_path / "decisions.parquet"
    argv = ["filter", str(root), "--output", str(decisions), "--filter", str(profile), "--workers", "1"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["filter"]["spec"] == "profile" and summary["filter"]["thresholds"] == fitted
    assert summary["images"] == len(figs) and decisions.is_file()
