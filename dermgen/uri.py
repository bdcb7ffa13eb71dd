"""The one parser of storage URIs: a local path or ``s3://bucket/prefix``.

Every "is this S3?" question goes through `parse_uri` / `is_s3`. URIs that carry credentials (a user or
password before the bucket, a query string such as ``?aws_secret_access_key=``) are refused without
echoing the credential: a secret must never reach an object key, run.json or a log line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from dermgen.errors import ConfigError, StoreError

S3_SCHEME = "s3://"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class Uri:
    """A parsed location: ``scheme`` is "s3" or "file"; for S3 ``bucket`` and ``prefix`` (no slashes at the
    ends), for files ``path`` (as given, not resolved)."""

    scheme: str
    bucket: str = ""
    prefix: str = ""
    path: str = ""

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    def __str__(self) -> str:
        if self.is_s3:
            return f"{S3_SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{S3_SCHEME}{self.bucket}"
        return self.path


def is_s3(text: str | os.PathLike) -> bool:
    """True for an ``s3://`` URI (no validation; use `parse_uri` at the edge)."""
    return str(text).startswith(S3_SCHEME)


def parse_uri(text: str | os.PathLike, what: str = "--output") -> Uri:
    """Parse a local path or s3:// URI.

    ConfigError (bad input, exit 2) for credentials in the URI; StoreError (exit 3) for another scheme or a
    missing bucket."""
    raw = str(text)
    m = _SCHEME.match(raw)
    if not m:
        return Uri("file", path=raw)
    scheme = m.group(1).lower()
    if scheme != "s3":
        shown = raw if "@" not in raw and "?" not in raw else f"{scheme}://***"
        raise StoreError(
            f"{what}: unsupported URI scheme in {shown!r}; expected a local path or s3://bucket/prefix"
        )
    rest = raw[m.end() :]
    netloc, _, prefix = rest.partition("/")
    if "@" in netloc or ":" in netloc:
        raise ConfigError(
            f"{what}: the s3:// URI carries credentials or a port before the bucket (shown here as "
            f"s3://***@{netloc.rpartition('@')[2].partition(':')[0]}/...); pass credentials through "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role, never in the URI"
        )
    if "?" in rest or "#" in rest:
        raise ConfigError(
            f"{what}: the s3:// URI for bucket {netloc!r} has a query string or fragment (not shown, it may "
            "hold a credential); S3 object keys here take no '?' or '#', pass credentials through the "
            "environment"
        )
    if not netloc:
        raise StoreError(f"{what}: {raw!r} names no bucket, expected s3://bucket/prefix")
    return Uri("s3", bucket=netloc, prefix=prefix.strip("/"))
