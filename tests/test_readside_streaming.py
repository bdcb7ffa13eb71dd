"""verify, inspect and report stream a run shard by shard with a bounded read pool: on a packed run of 2,000
rows their results equal what the rows read all at once say, any number of readers gives the same
answer, problems are still found, and the report says how many images its sampled sheets show of how many."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermgen.cli import main
from dermgen.data.pack import pack_folder
from dermgen.report import build_report, load_run
from dermgen.report_data import Series
from dermgen.rundir import RunDir, bounded_map, image_key, shard_key
from dermgen.store import open_store
from dermgen.verify import verify_run

ROWS = 2000


@pytest.fixture(scope="module")
def big_packed_run(tmp_path_factory) -> Path:
    """2,000 distinct 8x8 PNGs (1,200 benign, 800 malignant) packed in shards of 50 rows."""
    base = tmp_path_factory.mktemp("readside")
    rng = np.random.default_rng(3)
    for i in range(ROWS):
        label = "benign" if i % 5 < 3 else "malignant"
        (base / "img" / label).mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
        (base / "img" / label / f"i{i:05d}.png").write_bytes(buf.getvalue())
    pack_folder(base / "img", base / "run", shard_size=50)
    return base / "run"


def test_bounded_map_keeps_order_and_at_most_workers_in_flight():
    started, done, most = [], [], [0]
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
            most[0] = max(most[0], len(started) - len(done))
        time.sleep(0.002 * (i % 3))
        with lock:
            done.append(i)
        return i * i

    out = []
    for i, sq in bounded_map(work, range(60), workers=4):
        out.append((i, sq))
        with lock:  # never more than `workers` calls started ahead of what the caller has taken
            assert len(started) <= len(out) + 4
    assert out == [(i, i * i) for i in range(60)] and 1 < most[0] <= 4

    def boom(i: int) -> int:
        if i == 5:
            raise ValueError("five")
        return i

    with pytest.raises(ValueError, match="five"):
        list(bounded_map(boom, range(20), workers=3))
    assert list(bounded_map(lambda i: -i, [1, 2], workers=1)) == [(1, -1), (2, -2)]


def test_series_keeps_everything_up_to_its_cap_then_a_fixed_uniform_sample():
    small, big, again = Series(cap=100), Series(cap=100, seed=5), Series(cap=100, seed=5)
    for v in range(50):
        small.add(float(v))
    for v in range(10_000):
        big.add(float(v))
        again.add(float(v))
    assert list(small.values) == [float(v) for v in range(50)] and small.weight == 1.0
    assert big.n == 10_000 and len(big.values) == 100 and big.weight == 100.0
    assert (big.lo, big.hi) == (0.0, 9999.0) and list(big.values) == list(again.values)
    assert 2000 < np.mean(big.values) < 8000  # spread over the whole run, not its first values


def test_verify_streams_and_finds_the_same_as_ever(big_packed_run, tmp_path):
    one = verify_run(RunDir(big_packed_run), workers=1)
    many = verify_run(RunDir(big_packed_run), workers=6)
    assert one.to_dict() == many.to_dict()
    assert one.ok and one.rows == ROWS and one.images_checked == ROWS and one.shards == 40

    # a copy of the run with a duplicated row, a missing PNG and an orphan: each found, with its shard
    import shutil

    run = tmp_path / "run"
    shutil.copytree(big_packed_run, run)
    store = open_store(run)
    rd = RunDir(store)
    ids = rd.shard_ids()
    first, last = ids[0], ids[-1]
    table = rd.read_shard(last)
    dup = rd.read_shard(first).slice(3, 1).to_pylist()[0]
    rows = table.to_pylist()
    rows[7] = {**dup, "shard_id": last}
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dermgen.schema import SHARD_SCHEMA

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=SHARD_SCHEMA), buf)
    store.put(shard_key(last), buf.getvalue())
    gone = rd.read_shard(ids[10], ["image"]).column("image").to_pylist()[0]["path"]
    store.delete(gone)
    orphan = image_key("packed_benign-0999999", "benign", "packed", True)
    store.put(orphan, b"not a png")
    found = verify_run(rd, workers=4)
    assert found.to_dict() == verify_run(rd, workers=1).to_dict()
    text = "\n".join(found.problems)
    assert f"duplicate sample_id {dup['sample_id']} (also in shard {first})" in text
    assert f"{gone}: PNG of row" in text and "is missing" in text
    assert f"{orphan}: orphaned PNG" in text


def test_inspect_streams_counts_equal_to_the_rows(big_packed_run, capsys):
    assert main(["inspect", str(big_packed_run), "--json", "--workers", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = RunDir(big_packed_run).rows(["label", "kept", "status"]).to_pylist()
    by_label = Counter(r["label"] for r in rows)
    assert out["rows"] == len(rows) == ROWS and out["kept"] == sum(r["kept"] for r in rows)
    assert {k: v["rows"] for k, v in out["labels"].items()} == dict(by_label)
    assert out["shards_committed"] == 40
    assert main(["inspect", str(big_packed_run), "--json", "--workers", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == out


def test_report_streams_counts_and_says_how_many_images_it_shows(big_packed_run, tmp_path):
    data = load_run(open_store(big_packed_run), per_sheet=10, review=40, workers=4)
    rows = RunDir(big_packed_run).rows(["label", "kept"]).to_pylist()
    assert data.stats.rows == ROWS and data.shards == 40
    assert {k: c["rows"] for k, c in data.stats.by_label.items()} == dict(Counter(r["label"] for r in rows))
    assert data.sheet_pools == {(True, "benign"): 1200, (True, "malignant"): 800}
    assert len(data.kept_sheet) == 10 and len(data.review) == 40 and data.reviewable == ROWS
    again = load_run(open_store(big_packed_run), per_sheet=10, review=40, workers=1)
    assert [t.row["sample_id"] for t in again.kept_sheet] == [t.row["sample_id"] for t in data.kept_sheet]

    page = Path(build_report(str(big_packed_run), str(tmp_path / "rep"), per_sheet=10)).read_text()
    kept = page.split('id="kept-images"', 1)[1].split("</section>", 1)[0]
    assert "10 of 2,000 kept images, a fixed sample" in kept
    assert "5 of 1,200 benign, 5 of 800 malignant" in kept
    assert len(re.findall(r'<figure class="t"', kept)) == 10
    assert f"{len(re.findall('figure class=.t rv', page))} of 2,000 rendered images" in page
    assert f"{ROWS:,d}" in page.split('id="card-generated"', 1)[1][:200]


def test_verify_and_inspect_of_an_s3_run_read_in_parallel_agree_with_one_reader(s3_bucket, tmp_path, capsys):
    rng = np.random.default_rng(4)
    for i in range(120):
        label = ("benign", "malignant")[i % 2]
        (tmp_path / "img" / label).mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
        (tmp_path / "img" / label / f"i{i:04d}.png").write_bytes(buf.getvalue())
    uri = f"s3://{s3_bucket}/run"
    pack_folder(tmp_path / "img", uri, shard_size=16)
    rd = RunDir(uri)
    rd.store.delete(rd.read_shard(rd.shard_ids()[2], ["image"]).column("image").to_pylist()[5]["path"])
    one, many = verify_run(rd, workers=1), verify_run(rd, workers=8)
    assert one.to_dict() == many.to_dict() and many.rows == 120 and many.images_checked == 119
    assert len(many.problems) == 1 and "is missing" in many.problems[0]
    assert main(["inspect", uri, "--json", "--workers", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 120 and {k: v["rows"] for k, v in out["labels"].items()} == {
        "benign": 60,
        "malignant": 60,
    }
