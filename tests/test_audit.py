"""`dermgen audit`: nearest reference per generated image, the reference baseline, the offline HTML page
(rendered in headless Chromium), and a run audited through its LoRA adapter's card."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from dermgen.audit import audit, reference_from_adapters
from dermgen.errors import ConfigError
from dermgen.filters.dedup import iter_image_files, read_rgb
from filterlab.copies import hard_copy

ASSETS = Path(__file__).resolve().parent / "assets" / "memorisation"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DERMGEN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(reference folder: 8 assets, generated folder: 3 hard copies of references, the 4 other assets and
    a hard copy of one of those)."""
    root = tmp_path_factory.mktemp("audit")
    ref, gen = root / "ref", root / "gen"
    (ref / "benign").mkdir(parents=True)
    gen.mkdir()
    files = iter_image_files(ASSETS)
    for f in files[:8]:
        shutil.copy(f, ref / "benign" / f.name)
    rng = np.random.default_rng(5)
    copies = {}
    for n, (f, k) in enumerate(zip(files[:3], (1, 4, 6), strict=True)):
        name = f"copy{n}.jpg"
        cv2.imwrite(str(gen / name), hard_copy(read_rgb(f), rng, k)[..., ::-1])
        copies[name] = f"benign/{f.name}"
    for f in files[8:]:
        shutil.copy(f, gen / f.name)
    # a mirrored, cropped copy of another generated image: a near-duplicate within the set
    cv2.imwrite(str(gen / "zdup.jpg"), hard_copy(read_rgb(files[9]), rng, 7)[..., ::-1])
    return ref, gen, copies


def test_audit_folder_against_reference_folder(folders, tmp_path):
    ref, gen, copies = folders
    summary = audit(str(gen), tmp_path / "out", ref)
    rows = {r["image"]: r for r in pq.read_table(tmp_path / "out" / "audit.parquet").to_pylist()}
    assert len(rows) == 8
    for name, original in copies.items():
        assert rows[name]["above_threshold"] and rows[name]["nearest_reference"] == original, rows[name]
        assert rows[name]["distance"] == pytest.approx(1 - rows[name]["similarity"])
    others = [r for k, r in rows.items() if k not in copies]
    assert all(not r["above_threshold"] and r["nearest_reference"] for r in others)
    assert rows["zdup.jpg"]["duplicate_of"] == iter_image_files(ASSETS)[9].name
    assert [k for k, r in rows.items() if r["duplicate_of"]] == ["zdup.jpg"]
    assert summary["duplicates_within"] == 1
    base = pq.read_table(tmp_path / "out" / "baseline.parquet").to_pylist()
    assert len(base) == 8 and all(b["reference"] != b["nearest_other"] for b in base)
    assert summary["generated"]["above_threshold"] == 3 and summary["baseline"]["above_threshold"] == 0
    assert summary["references"] == 8
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["generated"]["n"] == 8
    page = (tmp_path / "out" / "index.html").read_text()
    srcs = re.findall(r'<img[^>]* src="([^"]*)"', page)
    assert len(srcs) == 16 and all(s.startswith("data:image/jpeg;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page  # offline: nothing fetched
    again = audit(str(gen), tmp_path / "out2", ref)
    assert again["reference_index_cached"] and again["generated"] == summary["generated"]


def test_audit_needs_a_reference_for_a_folder(folders, tmp_path):
    _, gen, _ = folders
    with pytest.raises(ConfigError, match="--reference"):
        audit(str(gen), tmp_path / "out")
    with pytest.raises(ConfigError, match="not a folder"):
        audit(str(tmp_path / "missing"), tmp_path / "out", gen)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(
            "headless audit test needs Debian packages chromium and chromium-driver (apt-get install)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def test_audit_page_renders_offline_in_chromium(browser, folders, tmp_path):
    ref, gen, copies = folders
    audit(str(gen), tmp_path / "out", ref)
    browser.get((tmp_path / "out" / "index.html").as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])"
    )
    assert len(images) == 16 and all(done and width > 0 for _, done, width in images), images
    cards = browser.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('.card'))"
        ".map(c => [c.id, c.querySelector('.v').innerText]))"
    )
    assert cards["card-duplicates"] == "1"
    assert cards["card-above"] == "3" and cards["card-images"] == "8" and cards["card-references"] == "8"
    hits = browser.execute_script("return document.querySelectorAll('td.hit').length")
    assert hits == 3
    first = browser.execute_script("return document.querySelector('tr.pair img').alt")
    assert first.startswith("generated copy")  # closest pairs first
    bars = browser.execute_script("return document.querySelectorAll('#distribution svg rect').length")
    assert bars == 50
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_run_audits_against_its_adapter_training_folder(folders, tmp_path):
    from support import generate_run, make_lora

    from dermgen.train.lora_card import build_card, memorisation_reference, write_card

    ref, _, _ = folders
    adapter = make_lora(tmp_path / "adapter")
    run = tmp_path / "run"
    generate_run(run, limit=4, lora=[str(adapter)])
    with pytest.raises(ConfigError, match="lora_card.json"):
        reference_from_adapters(str(run))
    card = build_card(
        base_model={"id": "tiny"},
        data={"uri": str(ref), "reference": memorisation_reference(str(ref))},
        class_data=None,
        hyperparameters={},
        training={},
        adapter_path=adapter,
        environment={},
    )
    write_card(card, adapter.parent)
    folder, digest = reference_from_adapters(str(run))
    assert Path(folder) == ref.resolve() and len(digest) == 64
    summary = audit(str(run), tmp_path / "out")
    assert summary["reference_sha256"] == digest and summary["generated"]["n"] == 4
    assert summary["generated"]["above_threshold"] == 0  # random 64 px tiny-model images copy nothing
    shutil.move(str(ref), str(ref) + ".moved")
    try:
        with pytest.raises(ConfigError, match="not reachable"):
            reference_from_adapters(str(run))
    finally:
        shutil.move(str(ref) + ".moved", str(ref))


def test_audit_command_line(capsys, folders, tmp_path):
    from dermgen.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["audit", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: dermgen audit" in out and re.search(r"^examples?:\n  dermgen audit", out, re.M)
    ref, gen, _ = folders
    assert main(["audit", str(gen), "--reference", str(ref), "--output", str(tmp_path / "o")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["generated"]["above_threshold"] == 3 and (tmp_path / "o" / "index.html").is_file()
    assert main(["audit", str(gen), "--output", str(tmp_path / "o2")]) == 2  # a folder needs --reference
