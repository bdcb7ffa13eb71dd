"""The driver's shard claims: claim a shard before it is dispatched, renew while it renders, release after.

`ShardLeases` is the scheduler's gate (`dermgen.scheduler.ShardGate`): before a shard goes to a worker,
`acquire` says whether this driver may render it ("mine"), another driver already committed it
("committed": the scheduler adopts its counts), or another driver holds a live claim ("taken": the
scheduler looks again later; a dead driver's claim expires). A background thread renews every held claim
each `renew_s` seconds, so a claim lives as long as its driver does. The claim format and its liveness rule
belong to `dermgen.rundir.claims`; this module only drives them. Plain Python: the in-process runner and
the Ray runner both use it on the driver.
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dermgen.errors import StoreError
from dermgen.rundir import RunDir, shard_key
from dermgen.rundir.claims import Claim, claim_key, read_claim
from dermgen.rundir.model import SUMMARY_COLUMNS, summarise_shard
from dermgen.store import Store

log = logging.getLogger(__name__)

MINE, COMMITTED, TAKEN = "mine", "committed", "taken"
ACQUIRE_TRIES = 5
CLAIM_THREADS = 16  # renewals and releases in flight at once (a pool of hundreds of actors holds many)


class ShardLeases:
    """This driver's claims on the shards of one run at one output."""

    def __init__(self, store: Store, run_id: str, lease_s: float, renew_s: float) -> None:
        if not 0 < renew_s < lease_s:
            raise ValueError(f"renew interval {renew_s:g}s must be positive and below the lease {lease_s:g}s")
        self.store = store
        self.run_id = run_id
        self.lease_s = lease_s
        self.renew_s = renew_s
        self.driver = uuid.uuid4().hex
        self._held: dict[str, tuple[Claim, str]] = {}  # shard_id -> (claim as written, its version)
        self._lock = threading.Lock()  # guards _held, _locks and _pool
        self._locks: dict[str, threading.Lock] = {}  # per claim: its renewal and release never overlap
        self._pool: ThreadPoolExecutor | None = None
        self._found: dict[str, str] = {}  # verdicts other than MINE found by `prefetch`, used once
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.taken_over = 0  # stale claims of other drivers this driver took over
        self.lost = 0  # own claims found changed at renewal (expired and taken over meanwhile)

    # -- the gate -------------------------------------------------------------------------------------

    def acquire(self, shard_id: str) -> str:
        """MINE (this driver now holds the shard's claim), COMMITTED or TAKEN (see the module docstring)."""
        with self._lock:
            if shard_id in self._held:
                return MINE
            found = self._found.pop(shard_id, None)
        return found or self._acquire(shard_id)

    def prefetch(self, shard_ids: list[str]) -> None:
        """Claim these shards (the next to be dispatched) in parallel on the claim threads; `acquire`
        then answers from what was found. Keeps a large pool fed when each claim is a store round trip."""
        with self._lock:
            todo = [s for s in shard_ids if s not in self._held and s not in self._found]
            pool = None if self._closed or len(todo) < 2 else self._executor()
        if pool is None:
            return
        for shard_id, verdict in zip(todo, pool.map(self._acquire, todo), strict=True):
            if verdict != MINE:
                with self._lock:
                    self._found[shard_id] = verdict

    def _acquire(self, shard_id: str) -> str:
        key = claim_key(shard_id)
        for _ in range(ACQUIRE_TRIES):
            claim = Claim.new(self.run_id, shard_id, self.driver, self.lease_s)
            version = self.store.create_versioned(key, claim.to_bytes())
            if version is None:
                try:
                    current, current_version = read_claim(self.store, shard_id)
                except KeyError:
                    continue  # released since: try to create it again
                if current is not None and current.driver == self.driver:
                    claim, version = current, current_version  # ours (an answer lost on the way back)
                elif current is not None and current.is_live(self.run_id):
                    return TAKEN
                else:
                    version = self.store.replace_if_version(key, claim.to_bytes(), current_version)
                    if version is None:
                        continue  # another driver changed it first: look again
                    with self._lock:
                        self.taken_over += 1
                    log.info(
                        "shard %s: took over the expired claim of %s",
                        shard_id,
                        current.describe() if current else "an unreadable claim",
                    )
            if self.store.exists(shard_key(shard_id)):  # committed before we claimed it
                self.store.delete_if_version(key, version)
                return COMMITTED
            with self._lock:
                self._held[shard_id] = (claim, version)
            self._ensure_renewing()
            return MINE
        return TAKEN  # contended each time: the scheduler looks again later

    def release(self, shard_id: str, wait: bool = False) -> None:
        """Give up the claim (after the shard committed, or when the run stops); never another's. Done on
        the claim threads unless `wait`, so the dispatch loop does not wait for the store."""
        with self._lock:
            if shard_id not in self._held:
                return
            pool = None if wait or self._closed else self._executor()
        if pool is None:
            self._release_one(shard_id)
        else:
            pool.submit(self._release_one, shard_id)

    def _claim_lock(self, shard_id: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(shard_id, threading.Lock())

    def _executor(self) -> ThreadPoolExecutor:  # called with self._lock held
        if self._pool is None:
            self._pool = ThreadPoolExecutor(CLAIM_THREADS, thread_name_prefix="dermgen-claims")
        return self._pool

    def _release_one(self, shard_id: str) -> None:
        with self._claim_lock(shard_id):
            with self._lock:
                held = self._held.pop(shard_id, None)
                self._locks.pop(shard_id, None)
            if held is None:
                return
            try:
                if not self.store.delete_if_version(claim_key(shard_id), held[1]):
                    log.debug("shard %s: claim already changed by another driver; left alone", shard_id)
            except Exception as exc:  # noqa: BLE001 - it expires on its own
                log.warning(
                    "shard %s: could not release its claim (%s); it expires on its own", shard_id, exc
                )

    def committed_summary(self, shard_id: str) -> dict[str, Any]:
        """The counts of a shard another driver committed, for the scheduler to adopt."""
        table = RunDir(self.store).read_shard(shard_id, list(SUMMARY_COLUMNS))
        summary = summarise_shard(shard_id, table)
        if summary.run_ids and summary.run_ids != (self.run_id,):
            raise StoreError(
                f"{self.store.url(shard_key(shard_id))} holds rows of run(s) {', '.join(summary.run_ids)}, "
                f"not of run {self.run_id} bound at this output"
            )
        return summary.as_dict()

    # -- renewal --------------------------------------------------------------------------------------

    @property
    def held(self) -> list[str]:
        with self._lock:
            return sorted(self._held)

    def renew(self) -> None:
        """Extend every held claim by a lease (on the claim threads, in parallel); a claim found changed
        was lost (logged, no longer held)."""
        held = self.held
        if not held:
            return
        with self._lock:
            if self._closed:
                return
            pool = self._executor()
        list(pool.map(self._renew_one, held))

    def _renew_one(self, shard_id: str) -> None:
        with self._claim_lock(shard_id):
            with self._lock:
                held = self._held.get(shard_id)
            if held is None:  # released meanwhile
                return
            claim = held[0].renewed(self.lease_s)
            try:
                version = self.store.replace_if_version(claim_key(shard_id), claim.to_bytes(), held[1])
            except Exception as exc:  # noqa: BLE001 - tried again next round
                log.warning("shard %s: claim renewal failed (%s); retrying", shard_id, exc)
                return
            with self._lock:
                if version is None:
                    self._held.pop(shard_id, None)
                    self.lost += 1
                else:
                    self._held[shard_id] = (claim, version)
            if version is None:
                log.warning(
                    "shard %s: this driver's claim expired and was taken over (renewals ran late: is "
                    "--claim-lease-s too short?); the commit stays exactly-once",
                    shard_id,
                )

    def _ensure_renewing(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._renew_loop, name="dermgen-claim-renewal", daemon=True
            )
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self.renew()
            except Exception:  # noqa: BLE001 - the thread must outlive one bad round
                log.exception("claim renewal round failed")

    def close(self) -> None:
        """Stop renewing and release every claim still held (the run ended or failed)."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=30)
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)  # releases already queued finish first
        for shard_id in self.held:
            self._release_one(shard_id)

    def stats(self) -> dict[str, Any]:
        return {"claims_taken_over": self.taken_over, "claims_lost": self.lost}

    def wait_s(self) -> float:
        """How long a driver with nothing to dispatch waits before looking at others' shards again."""
        return min(self.renew_s, 2.0)


__all__ = ["COMMITTED", "MINE", "TAKEN", "ShardLeases"]
