"""Arrow-facing file access over a `Store`, so loaders use the store's one S3 client configuration.

`S3RangeReader` is a seekable file over one S3 object (ranged GETs through `S3Store._call`, with its
retries); `StoreFileSystem` wraps a store as a ``pyarrow.fs.PyFileSystem`` for ``ray.data.read_parquet``.
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
from pyarrow import fs as pafs


class S3RangeReader(io.RawIOBase):
    """Read-only, seekable view of one S3 object; each read is one ranged GET."""

    def __init__(self, store: Any, key: str) -> None:
        from botocore.exceptions import ClientError

        self.store = store
        self.key = key
        self._pos = 0
        try:
            head = store._call("head", store.client.head_object, Bucket=store.bucket, Key=store._key(key))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                raise KeyError(key) from None
            raise
        self.size = int(head["ContentLength"])

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self._pos
        n = min(n, self.size - self._pos)
        if n <= 0:
            return b""
        lo, hi = self._pos, self._pos + n - 1

        def fetch() -> bytes:
            return self.store.client.get_object(
                Bucket=self.store.bucket, Key=self.store._key(self.key), Range=f"bytes={lo}-{hi}"
            )["Body"].read()

        data = self.store._call("ranged get", fetch)
        self._pos += len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self.read(-1)


class _StoreHandler(pafs.FileSystemHandler):
    """Paths are keys relative to the store's root."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _StoreHandler) and other.store.uri == self.store.uri

    def __ne__(self, other: object) -> bool:
        return not self == other

    def get_type_name(self) -> str:
        return "dermgen-store"

    def normalize_path(self, path: str) -> str:
        return path

    def equals(self, other: Any) -> bool:
        return self == other

    def _info(self, path: str) -> pafs.FileInfo:
        try:
            f = self.store.open_input(path)
        except KeyError:
            return pafs.FileInfo(path, pafs.FileType.NotFound)
        size = getattr(f, "size", None)
        if size is None:
            size = f.seek(0, io.SEEK_END)
        f.close()
        return pafs.FileInfo(path, pafs.FileType.File, size=size)

    def get_file_info(self, paths):
        return [self._info(p) for p in paths]

    def get_file_info_selector(self, selector):
        base = selector.base_dir.rstrip("/") + "/" if selector.base_dir else ""
        return [self._info(k) for k in self.store.list(base)]

    def open_input_file(self, path: str):
        return pa.PythonFile(self.store.open_input(path), mode="r")

    def open_input_stream(self, path: str):
        return pa.PythonFile(self.store.open_input(path), mode="r")

    def _read_only(self, *args: Any, **kwargs: Any):
        raise OSError("a run is read-only through this filesystem")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = _read_only
    delete_file = move = copy_file = open_output_stream = open_append_stream = _read_only


def store_filesystem(store: Any) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, base path) for `store`: a key's path is ``base + key``. Local folders use
    pyarrow's LocalFileSystem and absolute paths; S3 goes through the store's own client."""
    from dermgen.store import LocalStore

    if isinstance(store, LocalStore):
        return pafs.LocalFileSystem(), f"{store.root}/"
    return pafs.PyFileSystem(_StoreHandler(store)), ""
