"""The S3 backend of `dermgen.store`: an S3 (or S3-compatible) prefix through boto3, with retries.

Imported by `dermgen.store` (use `dermgen.store.S3Store` / `open_store`); split out to keep modules small.
"""

from __future__ import annotations

import builtins
import logging
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from dermgen.cache import cache_dir
from dermgen.errors import StoreError
from dermgen.store import Store, _check_key
from dermgen.uri import parse_uri

_UNSUPPORTED = object()  # a conditional request the endpoint does not implement

log = logging.getLogger("dermgen.store")


_RETRYABLE_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
    "502",
    "504",
}


class S3Store(Store):
    """An S3 (or S3-compatible: MinIO, Ceph, R2, moto) prefix, using standard AWS configuration.

    Credentials come from the usual chain (env, profile, instance role); ``AWS_ENDPOINT_URL`` points at
    a non-AWS server. Requests retry with exponential backoff and full jitter on throttling, 5xx and
    dropped connections, on top of botocore's own retries.
    """

    MULTIPART_THRESHOLD = 16 * 1024 * 1024

    def __init__(self, uri: str, *, max_attempts: int = 8, client=None) -> None:
        parsed = parse_uri(uri)
        if not parsed.is_s3:
            raise StoreError(f"--output: {uri!r} is not an s3:// URI")
        self.bucket = parsed.bucket
        self.prefix = parsed.prefix
        self.uri = str(parsed)
        self.max_attempts = max_attempts
        self._client = client
        self.conditional_writes = True
        self.compare_and_swap = True  # If-Match on PUT and DELETE (shard claims)
        self._warned_fallback = False
        self._warned_cas = False

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_client"] = None  # clients do not pickle; each process makes its own
        return state

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.session.Session().client(
                "s3",
                config=Config(
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=60,
                    max_pool_connections=32,
                ),
            )
        return self._client

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn, *args, **kwargs):
        """Run one S3 request with backoff + full jitter on retryable failures."""
        from botocore.exceptions import (
            ClientError,
            ConnectionError,
            HTTPClientError,
            IncompleteReadError,
            ReadTimeoutError,
        )
        from urllib3.exceptions import ProtocolError

        delay = 0.2
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn(*args, **kwargs)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
                if (code in _RETRYABLE_CODES or status in _RETRYABLE_CODES) and attempt < self.max_attempts:
                    log.debug("S3 %s: %s (attempt %d), retrying", what, code or status, attempt)
                else:
                    raise
            except (
                ConnectionError,
                HTTPClientError,
                ReadTimeoutError,
                IncompleteReadError,
                ProtocolError,  # a body stream cut off while read (urllib3)
                builtins.ConnectionError,  # reset / aborted sockets surfacing from a body read
            ) as exc:
                if attempt >= self.max_attempts:
                    raise StoreError(
                        f"S3 {what} failed after {attempt} attempts: {type(exc).__name__}"
                    ) from None
                log.debug("S3 %s: %s (attempt %d), retrying", what, type(exc).__name__, attempt)
            time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 10.0)

    def _put_raw(self, key: str, data: bytes) -> None:
        if len(data) >= self.MULTIPART_THRESHOLD:
            import io

            from boto3.s3.transfer import TransferConfig

            cfg = TransferConfig(
                multipart_threshold=self.MULTIPART_THRESHOLD, multipart_chunksize=8 * 1024 * 1024
            )
            self._call(
                "multipart upload",
                self.client.upload_fileobj,
                io.BytesIO(data),
                self.bucket,
                self._key(key),
                Config=cfg,
            )
        else:
            self._call("put", self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)

    def put(self, key: str, data: bytes) -> None:
        """Write `key`; a refused request (denied, quota, missing bucket) is a StoreError (exit 3)."""
        from botocore.exceptions import ClientError

        try:
            self._put_raw(key, data)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "") or "error"
            raise StoreError(f"cannot write {self.url(key)}: {code}") from None

    def put_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        if self.conditional_writes:
            try:
                self._call(
                    "conditional put",
                    self.client.put_object,
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=data,
                    IfNoneMatch="*",
                )
                return True
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                    return False
                if status in (400, 501) and code in ("NotImplemented", "InvalidArgument", "InvalidRequest"):
                    self.conditional_writes = False
                else:
                    raise
        if not self._warned_fallback:
            log.warning(
                "S3 endpoint rejects conditional writes (If-None-Match); falling back to check-then-put, "
                "which cannot rule out two racing attempts both committing the same shard"
            )
            self._warned_fallback = True
        if self.exists(key):
            return False
        self.put(key, data)
        return True

    # -- versioned objects: the ETag is the version; conditional requests make each step atomic -------

    @staticmethod
    def _refused(exc) -> str | None:
        """'changed' for a failed precondition or a missing object, 'unsupported' when the endpoint rejects
        the conditional header itself, else None (a real error)."""
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status in (404, 409, 412) or code in (
            "PreconditionFailed",
            "ConditionalRequestConflict",
            "NoSuchKey",
        ):
            return "changed"
        if status in (400, 501) and code in ("NotImplemented", "InvalidArgument", "InvalidRequest"):
            return "unsupported"
        return None

    def _warn_no_compare_and_swap(self) -> None:
        if not self._warned_cas:
            log.warning(
                "S3 endpoint rejects conditional writes or deletes (If-Match); shard claims fall back to "
                "check-then-act, which cannot rule out two drivers taking over the same expired claim"
            )
            self._warned_cas = True

    def create_versioned(self, key: str, data: bytes) -> str | None:
        resp = self._conditional(
            "conditional put", self.client.put_object, key, "conditional_writes", Body=data, IfNoneMatch="*"
        )
        if resp is not _UNSUPPORTED:
            return None if resp is None else resp["ETag"]
        return self.get_versioned(key)[1] if self.put_if_absent(key, data) else None

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        from botocore.exceptions import ClientError

        def fetch() -> tuple[bytes, str]:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return resp["Body"].read(), resp["ETag"]

        try:
            return self._call("get", fetch)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise KeyError(key) from None
            raise

    def _conditional(self, what: str, method, key: str, capability: str, **kwargs):
        """``method`` on ``key`` with its conditions in ``kwargs`` (If-Match / If-None-Match): its response,
        None when the condition failed (the object changed, is gone, or exists), or :data:`_UNSUPPORTED`
        when the endpoint does not implement it (``capability``, a flag of this store, is then cleared
        and the caller falls back to check-then-act)."""
        from botocore.exceptions import ClientError

        if not getattr(self, capability):
            return _UNSUPPORTED
        try:
            return self._call(what, method, Bucket=self.bucket, Key=self._key(key), **kwargs)
        except ClientError as exc:
            verdict = self._refused(exc)
            if verdict == "changed":
                return None
            if verdict != "unsupported":
                raise
            setattr(self, capability, False)
            return _UNSUPPORTED

    def _still_at(self, key: str, version: str) -> bool:
        """Check-then-act fallback: is the object at ``key`` still at ``version``?"""
        self._warn_no_compare_and_swap()
        try:
            return self.get_versioned(key)[1] == version
        except KeyError:
            return False

    def replace_if_version(self, key: str, data: bytes, version: str) -> str | None:
        resp = self._conditional(
            "conditional replace", self.client.put_object, key, "compare_and_swap", Body=data, IfMatch=version
        )
        if resp is not _UNSUPPORTED:
            return None if resp is None else resp["ETag"]
        if not self._still_at(key, version):
            return None
        resp = self._call("put", self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)
        return resp["ETag"]

    def delete_if_version(self, key: str, version: str) -> bool:
        resp = self._conditional(
            "conditional delete", self.client.delete_object, key, "compare_and_swap", IfMatch=version
        )
        if resp is not _UNSUPPORTED:
            return resp is not None
        if not self._still_at(key, version):
            return False
        self.delete(key)
        return True

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        def fetch() -> bytes:  # the body is read inside the retry: a dropped stream is retried too
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

        try:
            return self._call("get", fetch)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise KeyError(key) from None
            if code == "NoSuchBucket":
                raise StoreError(f"bucket {self.bucket!r} does not exist ({self.uri})") from None
            raise

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._call("head", self.client.head_object, Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise

    def list(self, prefix: str = "") -> Iterator[str]:
        from botocore.exceptions import ClientError

        if prefix:  # a folder-like prefix ("shards/") is fine here, unlike in an object key
            _check_key(prefix.rstrip("/"))
            full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        else:
            full = self.prefix + "/" if self.prefix else ""
        strip = len(self.prefix) + 1 if self.prefix else 0
        token = None
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": full}
            if token:
                kwargs["ContinuationToken"] = token
            try:
                resp = self._call("list", self.client.list_objects_v2, **kwargs)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                raise StoreError(f"cannot list {self.uri}: {code or 'error'}") from None
            for obj in resp.get("Contents", []):
                yield obj["Key"][strip:]
            if not resp.get("IsTruncated"):
                return
            token = resp.get("NextContinuationToken")

    def delete(self, key: str) -> None:
        self._call("delete", self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    def open_input(self, key: str):
        from dermgen.rundir.fs import S3RangeReader

        return S3RangeReader(self, key)

    def check_readable(self) -> None:
        self._head_bucket(what="run")

    def _head_bucket(self, what: str = "--output") -> None:
        from botocore.exceptions import ClientError, NoCredentialsError

        try:
            self._call("head bucket", self.client.head_bucket, Bucket=self.bucket)
        except NoCredentialsError:
            raise StoreError(
                f"{what}: no AWS credentials found for {self.uri!r}; set AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role"
            ) from None
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                raise StoreError(f"{what}: bucket {self.bucket!r} does not exist ({self.uri})") from None
            if status in (401, 403):
                raise StoreError(
                    f"{what}: access to bucket {self.bucket!r} denied; check the credentials and their "
                    "permissions (s3:ListBucket, s3:PutObject, s3:GetObject, s3:DeleteObject)"
                ) from None
            raise StoreError(f"{what}: cannot reach bucket {self.bucket!r}: HTTP {status}") from None
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{what}: cannot reach {self.uri!r}: {type(exc).__name__}") from None

    def check_writable(self) -> None:
        from botocore.exceptions import ClientError

        self._head_bucket()
        probe = f"_dermgen/probe-{uuid.uuid4().hex}"
        try:
            self._put_raw(probe, b"")
            self.delete(probe)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise StoreError(f"--output: {self.uri!r} is not writable ({code})") from None


def download_to_cache(uri: str) -> Path:
    """Fetch an s3:// object (a checkpoint or LoRA file) once into the local cache and return its path."""
    import hashlib

    dest = cache_dir(
        "downloads", hashlib.sha256(uri.encode()).hexdigest()[:16], uri.rstrip("/").rsplit("/", 1)[-1]
    )
    if dest.exists():
        return dest
    from botocore.exceptions import ClientError

    bucket_uri, _, name = uri.rpartition("/")
    store = S3Store(bucket_uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:  # streamed to disk (multipart, ranged GETs): a 4 GB checkpoint never sits in memory
        store._call("download", store.client.download_file, store.bucket, store._key(name), str(tmp))
    except ClientError as exc:
        tmp.unlink(missing_ok=True)
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            raise StoreError(f"{uri!r} does not exist") from None
        raise
    os.replace(tmp, dest)
    return dest
