"""Where runs live: one small interface, a local-folder backend (default) and an S3 backend (boto3).

Both give an atomic "create if absent" (`put_if_absent`) that the shard commit relies on: an atomic hard
link locally, a conditional PUT (`If-None-Match: *`) on S3. Shard claims (`dermgen.rundir.claims`) also need
compare-and-swap on small objects: `get_versioned` returns an object with its version tag (the S3 ETag, or a
content hash locally), and `replace_if_version` / `delete_if_version` act only while the object is still
that version (`If-Match` on S3; a lock on the folder locally). Keys are '/'-separated and relative to the root.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from dermgen.errors import StoreError
from dermgen.uri import parse_uri

log = logging.getLogger(__name__)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
TEMP_SUFFIX = ".tmp"


def _check_key(key: str) -> str:
    parts = key.split("/")
    if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"invalid object key {key!r}: keys are relative and contain no '.', '..' or '//'")
    return key


class Store(ABC):
    """A flat key -> bytes namespace under a root URI."""

    uri: str
    conditional_writes: bool = True

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write only if `key` does not exist, atomically. True if this call created it."""

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under `prefix` (relative to the root), in no particular order."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def check_writable(self) -> None:
        """Raise StoreError with a clear reason if the output cannot be written."""

    def url(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self.list(prefix))
        for k in keys:
            self.delete(k)
        return len(keys)

    def local_path(self, key: str) -> str | None:
        """A filesystem path for `key` when the store is local, else None."""
        return None

    def open_input(self, key: str):
        """A seekable binary file over `key` (KeyError if absent); ranged reads where the backend has them."""
        import io

        return io.BytesIO(self.get(key))

    def check_readable(self) -> None:
        """Raise StoreError with a clear reason if the root cannot be read (missing folder or bucket)."""
        return None

    def temp_files(self, prefix: str = "") -> list[str]:
        """Leftover temp files of interrupted writes (only local folders have them)."""
        return []

    # -- versioned objects (compare-and-swap), for small objects such as shard claims ---------------

    def create_versioned(self, key: str, data: bytes) -> str | None:
        """Create `key` only if absent, atomically; its version tag, or None if it already existed."""
        raise StoreError(f"{self.uri}: this store has no versioned writes")

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The object and its version tag (KeyError if absent)."""
        raise StoreError(f"{self.uri}: this store has no versioned reads")

    def replace_if_version(self, key: str, data: bytes, version: str) -> str | None:
        """Overwrite `key` only while it is still `version`, atomically; the new tag, or None (changed or gone)."""
        raise StoreError(f"{self.uri}: this store has no versioned writes")

    def delete_if_version(self, key: str, version: str) -> bool:
        """Delete `key` only while it is still `version`, atomically; True if this call deleted it."""
        raise StoreError(f"{self.uri}: this store has no versioned deletes")

    def delete_temp(self, key: str) -> None:
        """Remove one leftover temp file listed by `temp_files`."""
        return None


class LocalStore(Store):
    """A folder on a local or network filesystem."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def local_path(self, key: str) -> str:
        return str(self._path(key))

    def _write_temp(self, path: Path, data: bytes, durable: bool = True) -> str:
        """Write `data` beside `path` under a dot-name ending in ``.tmp`` (fsynced unless not `durable`); on
        any failure (disk full, quota, permissions) the temp file is removed and StoreError (exit 3) says
        why."""
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; runs are shared data, honour the umask
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            return tmp
        except OSError as exc:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            raise StoreError(
                f"cannot write {self.url(path.relative_to(self.root).as_posix())}: {exc.strerror or exc}"
            ) from None

    def temp_files(self, prefix: str = "") -> list[str]:
        """Keys of this store's own leftover temp files (``.<name>.<random>.tmp``) under `prefix`."""
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return []
        out = []
        for dirpath, _, files in os.walk(base):
            for name in files:
                if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                    out.append(Path(dirpath, name).relative_to(self.root).as_posix())
        return out

    def delete_temp(self, key: str) -> None:
        """Remove a leftover temp file found by `temp_files` (its key is a dot-name, not an object key)."""
        try:
            (self.root / key).unlink()
        except FileNotFoundError:
            pass

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            os.unlink(tmp)
            raise StoreError(f"cannot write {self.url(key)}: {exc.strerror or exc}") from None

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self._link_new(key, data, durable=True)

    def _link_new(self, key: str, data: bytes, durable: bool) -> bool:
        path = self._path(key)
        tmp = self._write_temp(path, data, durable)
        try:
            os.link(tmp, path)  # atomic, fails if the target exists
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot write {self.url(key)}: {exc.strerror or exc}") from None
        finally:
            os.unlink(tmp)

    # Versions are content hashes: every versioned object dermgen writes is unique (a claim holds a random
    # token and its expiry), so equal hashes mean the same write. Replace and delete hold an exclusive
    # flock on the object's folder while they compare and act; create is a hard link (atomic, fails if the
    # name exists), and nothing deletes a versioned object without the lock, so the compare stays true.
    # Versioned objects are short-lived coordination state (claims): they are not fsynced.

    @staticmethod
    def _version(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    @contextlib.contextmanager
    def _folder_lock(self, path: Path):
        import fcntl

        try:
            fd = os.open(path.parent, os.O_RDONLY)
        except FileNotFoundError:
            raise KeyError(str(path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the last descriptor releases the lock

    def create_versioned(self, key: str, data: bytes) -> str | None:
        return self._version(data) if self._link_new(key, data, durable=False) else None

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, self._version(data)

    def _if_version(self, key: str, version: str, act):
        """``act(path)`` under the folder's lock if the object at ``key`` is at ``version``; None if not."""
        try:
            path = self._path(key)
            with self._folder_lock(path):
                try:
                    current = path.read_bytes()
                except FileNotFoundError:
                    return None
                if self._version(current) != version:
                    return None
                return act(path)
        except KeyError:
            return None

    def replace_if_version(self, key: str, data: bytes, version: str) -> str | None:
        def swap_in(path: Path) -> str:
            tmp = self._write_temp(path, data, durable=False)
            try:
                os.replace(tmp, path)  # atomic: readers see the old version or the new one
            except OSError as exc:
                os.unlink(tmp)
                raise StoreError(f"cannot write {self.url(key)}: {exc.strerror or exc}") from None
            return self._version(data)

        return self._if_version(key, version, swap_in)

    def delete_if_version(self, key: str, version: str) -> bool:
        return self._if_version(key, version, lambda path: path.unlink() or True) is True

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None
        except IsADirectoryError:
            raise KeyError(key) from None

    def open_input(self, key: str):
        """A seekable binary file for `key` (for ranged reads of Parquet)."""
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise KeyError(key) from None

    def check_readable(self) -> None:
        if not self.root.is_dir():
            raise StoreError(f"{self.uri!r} does not exist or is not a folder (no run.json, no shards)")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return
        start = base if base.is_dir() else base.parent
        for dirpath, _, files in os.walk(start):
            for name in files:
                if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".dermgen-probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
        except OSError as exc:
            raise StoreError(f"--output: {self.uri!r} is not writable: {exc.strerror or exc}") from None
        link = probe.with_name(probe.name + ".link")
        try:  # the shard commit needs an atomic create-if-absent: find out now, not after the first shard
            os.link(probe, link)
            link.unlink()
        except OSError as exc:
            raise StoreError(
                f"--output: {self.uri!r} is on a filesystem without hard links ({exc.strerror or exc}); "
                "shards are committed with an atomic hard link, so write to a local disk or an s3:// URI"
            ) from None
        finally:
            probe.unlink()


def open_store(uri: str | os.PathLike, what: str = "--output") -> Store:
    """A store for a local path or an s3:// URI (parsed by `dermgen.uri.parse_uri`)."""
    parsed = parse_uri(uri, what)
    if parsed.is_s3:
        from dermgen.store_s3 import S3Store

        return S3Store(str(parsed))
    return LocalStore(parsed.path)


def __getattr__(name: str):
    """`S3Store` and `download_to_cache` live in `dermgen.store_s3` (which builds on `Store`); imported on
    first use so the two modules do not import each other at load time."""
    if name in ("S3Store", "download_to_cache"):
        from dermgen import store_s3

        return getattr(store_s3, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LocalStore", "S3Store", "Store", "download_to_cache", "open_store"]  # noqa: F822 - lazy, see __getattr__
