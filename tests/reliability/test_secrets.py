"""Credentials never leave the environment: not in run.json, summary.json, Parquet (data or metadata), PNG
text chunks, logs, or error messages, even when the store's own error answers echo the access key id."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fault_proxy import Fault

from dermgen.cli import main
from dermgen.store import open_store

SMOKE = str(Path(__file__).resolve().parents[2] / "manifests" / "smoke.yaml")


def generate_args(uri: str) -> list[str]:
    return [
        "generate",
        *("--manifest", SMOKE, "--model", "tiny", "--limit", "8", "--size", "64", "--filter", "none"),
        *("--shard-size", "2", "--batch-size", "2", "--no-ray", "--output", uri),
    ]


def written_texts(store) -> dict[str, str]:
    """Everything a run wrote, as text: raw bytes, Parquet metadata and decoded rows, PNG text chunks."""
    from PIL import Image

    out: dict[str, str] = {}
    for key in store.list():
        data = store.get(key)
        out[key] = data.decode("latin-1")
        if key.endswith(".parquet"):
            pf = pq.ParquetFile(io.BytesIO(data))
            out[key + "#metadata"] = repr(pf.metadata.metadata) + str(pf.schema_arrow)
            rows = pf.read().to_pylist()
            for r in rows:
                if r["image"]:
                    out[f"{key}#{r['sample_id']}.png"] = json.dumps(
                        Image.open(io.BytesIO(r["image"]["bytes"])).text
                    )
                    r["image"] = r["image"]["path"]
            out[key + "#rows"] = json.dumps(rows, default=str)
        elif key.endswith(".png"):
            out[key + "#text"] = json.dumps(Image.open(io.BytesIO(data)).text)
    return out


def assert_no_secret(texts: dict[str, str], secrets: dict[str, str]) -> None:
    leaks = [
        (where, name) for where, text in texts.items() for name, value in secrets.items() if value in text
    ]
    assert not leaks, f"secrets found: {leaks}"


def test_no_secret_in_anything_a_run_writes_or_logs(fake_secrets, s3_bucket, capfd, caplog):
    uri = f"s3://{s3_bucket}/secret-check"
    caplog.set_level(logging.DEBUG, logger="dermgen")
    assert main(generate_args(uri)) == 0
    assert main(["verify", uri]) == 0
    assert main(["inspect", uri, "--json"]) == 0
    texts = written_texts(open_store(uri))
    kinds = {k.rsplit(".", 1)[-1] for k in texts if "#" not in k}
    print(f"scanned {len(texts)} texts from {sum('#' not in k for k in texts)} objects ({sorted(kinds)})")
    assert {"json", "parquet", "png"} <= kinds and len(texts) > 20
    assert json.loads(texts["run.json"])["config"]["output"] == uri  # the config is recorded, not the env
    out, err = capfd.readouterr()
    texts.update(stdout=out, stderr=err, logs=caplog.text)
    assert "verify" in out and caplog.records, "logs and output were captured"
    assert_no_secret(texts, fake_secrets)


@pytest.mark.parametrize(
    "fault, expected",
    [
        (Fault("denied", times=10**6), "access to bucket"),
        (Fault("denied", times=10**6, methods=("PUT",)), "is not writable (SignatureDoesNotMatch)"),
    ],
    ids=["all-denied", "writes-denied"],
)
def test_no_secret_in_store_error_messages(fault, expected, fake_secrets, s3_bucket, fault_proxy, capfd):
    """The store answers 403 with the access key id and the signed request in its error body."""
    proxy = fault_proxy([fault])
    rc = main(generate_args(f"s3://{s3_bucket}/denied"))
    out, err = capfd.readouterr()
    print(f"exit {rc}: {err.strip().splitlines()[-1]}")
    assert proxy.injected["denied"] >= 1
    assert rc == 3 and expected in err
    assert_no_secret({"stdout": out, "stderr": err}, fake_secrets)


def test_no_secret_in_an_unexpected_s3_failure_mid_run(fake_secrets, s3_bucket, fault_proxy, capsys, caplog):
    """A denied shard commit ends the job with one line (exit 1) and, with -v, a logged traceback; neither
    holds credentials, although the server's error body echoes the access key id."""
    fault_proxy([Fault("denied", times=10**6, methods=("PUT",), path_contains="/shards/")])
    with caplog.at_level(logging.DEBUG):
        code = main(["-v", *generate_args(f"s3://{s3_bucket}/denied-commit")])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: unexpected ClientError" in err and "SignatureDoesNotMatch" in err
    assert "Traceback" in caplog.text  # the traceback is in the log, for -v
    assert_no_secret({"stderr": err, "log": caplog.text}, fake_secrets)
