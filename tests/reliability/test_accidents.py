"""Ordinary accidents a new user makes with a run, each with its expected outcome: refused with an exit code
and nothing touched, caught by `dermgen verify` (exit 5), or never adopted."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from support import REPO_ROOT

from dermgen.cli import main
from dermgen.errors import PlanMismatchError, StoreError
from dermgen.rundir import RunDir, shard_key
from dermgen.shards import table_to_parquet
from dermgen.store import LocalStore, open_store

SHARD = "benign_mole-0000000-0000002"
SMOKE_MANIFEST = str(REPO_ROOT / "manifests" / "smoke.yaml")
SMOKE_ARGS = ["--manifest", SMOKE_MANIFEST, "--model", "tiny", "--limit", "8", "--size", "64"]
SMOKE_ARGS += ["--shard-size", "2", "--batch-size", "2", "--filter", "none", "--no-ray"]


def tree(root: Path) -> dict[str, str]:
    """Every file under `root` with the sha256 of its bytes."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def a_png(run: Path) -> bytes:
    return next((run / "images").rglob("*.png")).read_bytes()


# -- the run never touches what it did not write ---------------------------------------------------------


def test_output_holding_other_files_is_refused_before_any_work(tmp_path, base_run, capsys):
    project = tmp_path / "project"
    (project / "images" / "figures").mkdir(parents=True)
    (project / "images" / "figures" / "plot.png").write_bytes(a_png(base_run))
    (project / "notes.txt").write_text("mine")
    before = tree(project)
    assert main(["generate", *SMOKE_ARGS, "--output", str(project)]) == 3
    err = capsys.readouterr().err
    assert "is not empty and holds no dermgen run" in err and "--force-new-run" in err
    assert tree(project) == before  # nothing written, nothing deleted


def test_output_holding_other_objects_on_s3_is_refused(s3_bucket, base_run, capsys):
    store = open_store(f"s3://{s3_bucket}/project")
    store.put("images/team/photo.png", a_png(base_run))
    assert main(["generate", *SMOKE_ARGS, "--output", store.uri]) == 3
    assert "holds no dermgen run" in capsys.readouterr().err
    assert sorted(store.list()) == ["images/team/photo.png"]


def test_forced_run_beside_other_files_never_deletes_them(tmp_path, base_run, gen):
    """With --force-new-run the run is written beside foreign files; its orphan sweep leaves them alone, even
    a PNG named like the run's own whose embedded run_id is not this run's."""
    out = tmp_path / "out"
    foreign = {
        "images/figures/plot.png": a_png(base_run),
        "images/kept/benign/benign_mole-0000000.cafe.png": b"\x89PNG not ours",
        "readme.md": b"mine",
    }
    for key, data in foreign.items():
        (out / key).parent.mkdir(parents=True, exist_ok=True)
        (out / key).write_bytes(data)
    summary = gen(out, force_new_run=True)
    assert summary["complete"] and summary["orphans_removed"] == 0
    for key, data in foreign.items():
        assert (out / key).read_bytes() == data


def test_sweep_removes_only_the_runs_own_orphans(run_copy):
    rd = RunDir(LocalStore(run_copy))
    run_id = rd.info().run_id
    kept = sorted((run_copy / "images").rglob("*.png"))[0]
    own = kept.with_name(kept.name.split(".")[0] + ".deadbeef0000.png")  # a dead attempt of this run
    own.write_bytes(kept.read_bytes())
    other = kept.with_name(kept.name.split(".")[0] + ".feedface0000.png")  # same naming, other run's bytes
    other.write_bytes(b"\x89PNG\r\n\x1a\n not a dermgen png")
    unrelated = run_copy / "images" / "notes" / "figure.png"
    unrelated.parent.mkdir()
    unrelated.write_bytes(kept.read_bytes())
    removed = rd.sweep_orphans(run_id, {"benign_mole", "malignant_mole"})
    assert removed == [own.relative_to(run_copy).as_posix()]
    assert not own.exists() and other.exists() and unrelated.exists() and kept.exists()


# -- everything that decides pixels is bound -------------------------------------------------------------


def test_lost_run_json_with_shards_is_refused_with_a_way_to_recover(run_copy, capsys):
    (run_copy / "run.json").unlink()
    before = tree(run_copy)
    assert main(["generate", *SMOKE_ARGS, "--seed", "7", "--output", str(run_copy)]) == 3
    err = capsys.readouterr().err
    assert "but no run.json" in err and "restore run.json" in err and "--force-new-run" in err
    assert tree(run_copy) == before


def test_shard_of_another_run_is_never_adopted(run_copy, gen):
    rd = RunDir(LocalStore(run_copy))
    rows = rd.read_shard(SHARD).to_pylist()
    for r in rows:
        r["run_id"] = "0123456789abcdef"
    (run_copy / shard_key(SHARD)).write_bytes(
        table_to_parquet(rd.read_shard(SHARD).from_pylist(rows, rd.read_shard(SHARD).schema))
    )
    with pytest.raises(StoreError, match="holds rows of run"):
        gen(run_copy)
    assert main(["verify", str(run_copy)]) == 5


def test_a_run_json_of_an_earlier_version_resumes_under_its_own_run_id(run_copy, gen):
    """run.json written before manifest adapters and the plan size were recorded (and so with a run_id
    hashed from fewer fields) still resumes: same plan, its own run_id, its shards adopted."""
    old_id = "0ld0ld0ld0ld0ld0"
    info = json.loads((run_copy / "run.json").read_text())
    info["run_id"] = old_id
    for key in ("kind", "plan_size"):
        info.pop(key)
    info["binding"].pop("manifest_loras")
    (run_copy / "run.json").write_text(json.dumps(info))
    rd = RunDir(LocalStore(run_copy))
    for sid in rd.shard_ids():
        table = rd.read_shard(sid)
        rows = [dict(r, run_id=old_id) for r in table.to_pylist()]
        (run_copy / shard_key(sid)).write_bytes(table_to_parquet(table.from_pylist(rows, table.schema)))
    summary = gen(run_copy)
    assert summary["complete"] and summary["run_id"] == old_id and summary["generated"] == 8
    assert main(["verify", "--skip-images", str(run_copy)]) == 0


def test_manifest_lora_is_bound_by_content(tmp_path):
    """Swapping the adapter file a manifest names (same path) is a different plan: refused (exit 4)."""
    from support import make_lora

    from dermgen.config import make_config
    from dermgen.run import prepare_run

    adapter = make_lora(tmp_path / "adapters", seed=0)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "name: m\nmodel: tiny\nentries:\n  - {id: a, label: benign, prompt: mole, count: 2, steps: 2, size: 64,"
        " loras: [{path: adapters/pytorch_lora_weights.safetensors, scale: 0.5}]}\n"
    )
    cfg = make_config(manifest=str(manifest), model="tiny", output=str(tmp_path / "out"), filter="none")
    run = prepare_run(cfg)
    bound = run.binding["manifest_loras"]
    assert [b["path"] for b in bound] == [str(adapter)]  # relative to the manifest's folder
    assert bound[0]["sha256"] == hashlib.sha256(adapter.read_bytes()).hexdigest()
    make_lora(tmp_path / "adapters", seed=1)
    with pytest.raises(PlanMismatchError, match="manifest_loras"):
        prepare_run(cfg)


# -- verify catches what it must -------------------------------------------------------------------------


def test_verify_catches_relabelled_rows(run_copy, capsys):
    rd = RunDir(LocalStore(run_copy))
    table = rd.read_shard(SHARD)
    rows = table.to_pylist()
    for r in rows:
        r["label"] = "malignant"
    (run_copy / shard_key(SHARD)).write_bytes(table_to_parquet(table.from_pylist(rows, table.schema)))
    assert main(["verify", "--skip-images", str(run_copy)]) == 5
    assert "label is 'malignant', planned 'benign'" in capsys.readouterr().out


def test_verify_catches_a_shard_missing_from_the_summary_list(run_copy, capsys):
    """A finished run's summary.json lists every committed shard, top-ups included; one that is gone (here a
    listed top-up) is a problem even though the plan's base shards are all there."""
    summary = json.loads((run_copy / "summary.json").read_text())
    assert sorted(summary["committed_shards"]) == RunDir(LocalStore(run_copy)).shard_ids()
    summary["committed_shards"].append("benign_mole-0000004-0000006")
    (run_copy / "summary.json").write_text(json.dumps(summary))
    assert main(["verify", "--skip-images", str(run_copy)]) == 5
    assert (
        "benign_mole-0000004-0000006.parquet: listed in summary.json but missing" in capsys.readouterr().out
    )


@pytest.mark.parametrize(
    "stray",
    [
        "shards/sub/{s}.parquet",
        "shards/{s} (copy).parquet",
        "shards/.{s}.parquet.x1y2.tmp",
        "backup/{s}.parquet",
    ],
)
def test_verify_reports_nested_copied_and_temp_files(run_copy, capsys, stray):
    key = stray.format(s=SHARD)
    (run_copy / key).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_copy / shard_key(SHARD), run_copy / key)
    assert main(["verify", "--skip-images", str(run_copy)]) == 5
    assert key in capsys.readouterr().out


def test_verify_on_a_missing_bucket_is_a_store_error(s3_server, capsys):
    assert main(["verify", "s3://no-such-bucket/run"]) == 3
    assert "bucket 'no-such-bucket' does not exist" in capsys.readouterr().err


def test_verify_on_a_missing_folder_is_a_store_error(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nope")]) == 3


# -- store errors -----------------------------------------------------------------------------------------


def test_disk_full_is_a_store_error_and_leaves_no_temp_file(tmp_path, monkeypatch, capsys):
    import errno
    import os

    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "out"
    assert main(["generate", *SMOKE_ARGS, "--output", str(out)]) == 3
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_s3_write_refused_is_a_store_error(s3_bucket):
    import boto3

    store = open_store(f"s3://{s3_bucket}/run")
    boto3.client("s3").delete_bucket(Bucket=s3_bucket)  # gone mid-run
    with pytest.raises(StoreError, match="cannot write .*NoSuchBucket"):
        store.put("shards/x.parquet", b"data")


def test_resume_sweeps_temp_files_of_an_interrupted_write(run_copy, gen):
    stale = run_copy / "shards" / f".{SHARD}.parquet.abc123.tmp"
    stale.write_bytes(b"half a shard")
    summary = gen(run_copy)
    assert summary["complete"] and not stale.exists()
    assert main(["verify", "--skip-images", str(run_copy)]) == 0


def test_rows_record_prompt_tokens(base_run):
    from dermgen.prompts import token_count

    rows = RunDir(LocalStore(base_run)).rows(["prompt", "prompt_tokens", "prompt_truncated"]).to_pylist()
    assert rows and all(r["prompt_tokens"] == token_count(r["prompt"]) > 0 for r in rows)
    assert not any(r["prompt_truncated"] for r in rows)


def test_long_prompts_are_flagged_and_warned_once_per_entry(caplog):
    from dermgen.manifest import parse_manifest
    from dermgen.prompts import PROMPT_TOKENS, is_truncated, token_count, warn_truncated

    long = ", ".join(["dermoscopy of an irregular pigmented lesion"] * 12)
    assert token_count(long) > PROMPT_TOKENS and is_truncated(long) and not is_truncated("benign mole")
    m = parse_manifest(
        {
            "name": "m",
            "entries": [
                {"id": "a", "label": "benign", "prompt": long, "count": 5},
                {"id": "b", "label": "benign", "prompt": "benign mole", "count": 5},
            ],
        }
    )
    with caplog.at_level("WARNING", logger="dermgen.prompts"):
        assert warn_truncated(m.entries) == ["a"]
    assert len(caplog.records) == 1 and "entry a: prompt is" in caplog.text


def test_verify_checks_adapters_and_their_hashes(tmp_path, gen, capsys):
    """A run with a --lora and a manifest adapter verifies clean; a row whose adapter hash differs from the
    one bound in run.json (a swapped file mid-run) is a problem."""
    from support import make_lora

    a = make_lora(tmp_path / "a", seed=0)
    b = make_lora(tmp_path / "b", seed=1)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "name: m\nmodel: tiny\nentries:\n  - {id: e, label: benign, prompt: mole, count: 2, steps: 2, size: 64,"
        " loras: [{path: b/pytorch_lora_weights.safetensors, scale: 0.5}]}\n"
    )
    out = tmp_path / "out"
    gen(out, manifest=str(manifest), limit=2, lora=[f"{a}:0.8"])
    assert main(["verify", str(out)]) == 0
    rd = RunDir(LocalStore(out))
    sid = rd.shard_ids()[0]
    table = rd.read_shard(sid)
    rows = table.to_pylist()
    assert {lr["path"] for lr in rows[0]["loras"]} == {str(a), str(b)}
    rows[0]["loras"] = [dict(lr, sha256="f" * 64) if lr["path"] == str(b) else lr for lr in rows[0]["loras"]]
    (out / shard_key(sid)).write_bytes(table_to_parquet(table.from_pylist(rows, table.schema)))
    capsys.readouterr()
    assert main(["verify", "--skip-images", str(out)]) == 5
    assert f"adapter {b} has sha256 ffffffffffff..." in capsys.readouterr().out


def test_the_card_never_overwrites_a_readme_it_did_not_write(run_copy):
    """A README.md that is not a dermgen card (e.g. a run written beside a project's files with
    --force-new-run) is left as it is; the run's own card is refreshed."""
    from dermgen.card import write_card
    from dermgen.errors import StoreError

    readme = run_copy / "README.md"
    readme.write_text("# my project\n")
    with pytest.raises(StoreError, match="not a dermgen dataset card"):
        write_card(str(run_copy))
    assert readme.read_text() == "# my project\n"
    readme.unlink()
    write_card(str(run_copy))
    write_card(str(run_copy))  # its own card: refreshed
    assert "dermgen synthetic skin lesions" in readme.read_text()
