"""Shard claims: a driver's expiring, renewable right to render one shard of a run.

    claims/<shard_id>.json   {"run_id", "shard_id", "driver", "token", "host", "host_id", "pid",
                              "acquired_at", "renewed_at", "expires_at", "lease_s"}

Two drivers on one output split the shards instead of rendering each twice, and neither's orphan sweep
deletes PNGs the other is still writing. A claim is created with the store's atomic create-if-absent;
renewed, taken over (once stale) and released with compare-and-swap on its version
(`Store.replace_if_version` / `delete_if_version`: `If-Match` on S3, a folder lock locally), so of two
drivers racing for one claim exactly one wins.

A claim is *live* while all of these hold: it belongs to the run bound at the output, its expiry (the
writer's wall clock; hosts' clocks must agree to well within a lease) is ahead, and, when it was written
on this host (same boot, same PID namespace), its process still exists. So a dead driver's claims are
stale at once for a driver restarted on the same machine, and after the lease for everyone else.
This module owns the format; `dermgen.leases` is the driver side (acquire, renew, release).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, ValidationError

from dermgen.rundir.layout import CLAIMS_PREFIX, claim_key, parse_claim_key, parse_shard_id
from dermgen.store import Store

log = logging.getLogger(__name__)

HOST_ENV = "DERMGEN_CLAIM_HOST"


@lru_cache(maxsize=1)
def host_identity() -> str:
    """This machine as claims name it: hostname, boot id and PID namespace, so that "same host_id" means
    "pids are comparable" (containers sharing a hostname differ in their PID namespace). `DERMGEN_CLAIM_HOST`
    overrides it (only to give processes on one machine distinct identities, never the same one to two
    machines)."""
    override = os.environ.get(HOST_ENV)
    if override:
        return override
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id",):
        try:
            with open(path) as f:
                parts.append(f.read().strip())
        except OSError:
            parts.append("?")
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        parts.append("?")
    return "|".join(parts)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


class Claim(BaseModel):
    """One claim object. `token` is unique per write, so every version of a claim has distinct bytes."""

    model_config = ConfigDict(extra="allow")
    run_id: str
    shard_id: str
    driver: str
    token: str
    host: str
    host_id: str
    pid: int
    acquired_at: float
    renewed_at: float
    expires_at: float
    lease_s: float

    @classmethod
    def new(cls, run_id: str, shard_id: str, driver: str, lease_s: float, now: float | None = None) -> Claim:
        now = time.time() if now is None else now
        return cls(
            run_id=run_id,
            shard_id=shard_id,
            driver=driver,
            token=uuid.uuid4().hex,
            host=socket.gethostname(),
            host_id=host_identity(),
            pid=os.getpid(),
            acquired_at=now,
            renewed_at=now,
            expires_at=now + lease_s,
            lease_s=lease_s,
        )

    def renewed(self, lease_s: float, now: float | None = None) -> Claim:
        now = time.time() if now is None else now
        return self.model_copy(
            update={
                "token": uuid.uuid4().hex,
                "renewed_at": now,
                "expires_at": now + lease_s,
                "lease_s": lease_s,
            }
        )

    def to_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()

    @classmethod
    def parse(cls, data: bytes) -> Claim | None:
        """The claim, or None for bytes that are not one (treated as stale: anyone may take it over)."""
        try:
            return cls.model_validate(json.loads(data))
        except (ValueError, ValidationError):
            return None

    def is_live(self, run_id: str, now: float | None = None) -> bool:
        """Whether this claim still stops others from rendering its shard (see the module docstring)."""
        now = time.time() if now is None else now
        if self.run_id != run_id or now >= self.expires_at:
            return False
        if self.host_id == host_identity() and self.pid != os.getpid() and not _pid_alive(self.pid):
            return False
        return True

    def describe(self) -> str:
        return f"driver {self.driver[:8]} (pid {self.pid} on {self.host})"


def read_claim(store: Store, shard_id: str) -> tuple[Claim | None, str]:
    """(claim or None if unreadable, version) of the shard's claim object; KeyError if there is none."""
    data, version = store.get_versioned(claim_key(shard_id))
    return Claim.parse(data), version


def read_claims(store: Store) -> dict[str, tuple[Claim | None, str]]:
    """Every claim object under claims/ (a claim released while listing is left out)."""
    out: dict[str, tuple[Claim | None, str]] = {}
    for key in store.list(CLAIMS_PREFIX):
        shard_id = parse_claim_key(key)
        if shard_id is None:
            continue
        try:
            out[shard_id] = read_claim(store, shard_id)
        except KeyError:
            continue
    return out


class ClaimedRanges:
    """Sample index ranges of shards under a live claim, per entry: the sweep keeps their PNGs."""

    def __init__(self, shard_ids: set[str] | list[str]) -> None:
        self.ranges: dict[str, list[tuple[int, int]]] = {}
        for shard_id in shard_ids:
            parsed = parse_shard_id(shard_id)
            if parsed:
                entry, start, end = parsed
                self.ranges.setdefault(entry, []).append((start, end))

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def covers(self, entry_id: str, index: int) -> bool:
        return any(start <= index < end for start, end in self.ranges.get(entry_id, ()))


def sweep_stale_claims(
    store: Store, run_id: str, claims: dict[str, tuple[Claim | None, str]], dry_run: bool = False
) -> list[str]:
    """Delete claims that are no longer live, each only if unchanged since read. Returns their keys."""
    now = time.time()
    removed = []
    for shard_id, (claim, version) in sorted(claims.items()):
        if claim is not None and claim.is_live(run_id, now):
            continue
        if dry_run or store.delete_if_version(claim_key(shard_id), version):
            removed.append(claim_key(shard_id))
    return removed


__all__ = [
    "HOST_ENV",
    "Claim",
    "ClaimedRanges",
    "claim_key",
    "host_identity",
    "read_claim",
    "read_claims",
    "sweep_stale_claims",
]
