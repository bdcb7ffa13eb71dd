import threading

import pytest

from dermgen.errors import StoreError
from dermgen.store import LocalStore, S3Store, open_store


def exercise(store):
    store.put("a/b.txt", b"1")
    assert store.get("a/b.txt") == b"1" and store.exists("a/b.txt")
    assert store.put_if_absent("a/c.txt", b"first") is True
    assert store.put_if_absent("a/c.txt", b"second") is False
    assert store.get("a/c.txt") == b"first"
    assert sorted(store.list("a/")) == ["a/b.txt", "a/c.txt"]
    store.delete("a/b.txt")
    assert not store.exists("a/b.txt")
    with pytest.raises(KeyError):
        store.get("a/b.txt")
    with pytest.raises(StoreError, match="invalid object key"):
        store.put("../escape", b"x")


def test_local_store(tmp_path):
    store = open_store(tmp_path / "out")
    assert isinstance(store, LocalStore)
    store.check_writable()
    exercise(store)


def test_s3_store(s3_bucket):
    store = open_store(f"s3://{s3_bucket}/runs/x")
    assert isinstance(store, S3Store)
    store.check_writable()
    exercise(store)


def test_conditional_create_has_one_winner_under_races(tmp_path, s3_bucket):
    for store in (LocalStore(tmp_path), S3Store(f"s3://{s3_bucket}/race")):
        wins = []
        barrier = threading.Barrier(8)

        def attempt(i, store=store, barrier=barrier, wins=wins):
            barrier.wait()
            wins.append(store.put_if_absent("shards/x.parquet", f"attempt {i}".encode()))

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wins.count(True) == 1, (store.uri, wins)


def test_missing_bucket_is_a_clear_error(s3_server):
    with pytest.raises(StoreError, match="bucket 'no-such-bucket' does not exist"):
        S3Store("s3://no-such-bucket/x").check_writable()


def test_s3_large_object_uses_multipart(s3_bucket, monkeypatch):
    monkeypatch.setattr(S3Store, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    store = S3Store(f"s3://{s3_bucket}/big")
    data = bytes(range(256)) * (6 * 4096)  # 6 MiB
    store.put("blob.bin", data)
    assert store.get("blob.bin") == data
    head = store.client.head_object(Bucket=s3_bucket, Key="big/blob.bin")
    assert "-" in head["ETag"]  # multipart ETags carry the part count


def test_unwritable_local_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="not writable"):
        LocalStore(blocker / "sub").check_writable()


def test_download_to_cache_streams_once_and_reports_missing(s3_bucket, tmp_path, monkeypatch):
    from dermgen.store import download_to_cache

    monkeypatch.setenv("DERMGEN_CACHE", str(tmp_path / "cache"))
    store = S3Store(f"s3://{s3_bucket}/models")
    data = bytes(range(256)) * 4096
    store.put("adapter.safetensors", data)
    path = download_to_cache(f"s3://{s3_bucket}/models/adapter.safetensors")
    assert path.read_bytes() == data and path.name == "adapter.safetensors"
    store.delete("adapter.safetensors")  # a second call uses the cache, not the bucket
    assert download_to_cache(f"s3://{s3_bucket}/models/adapter.safetensors") == path
    with pytest.raises(StoreError, match="does not exist"):
        download_to_cache(f"s3://{s3_bucket}/models/missing.safetensors")
