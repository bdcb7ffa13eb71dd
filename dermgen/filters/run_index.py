"""Near-duplicates across a whole run: every image is compared with the images the run kept so far.

In one process a :class:`RunIndex` alone is the run's memory: each image is matched against it and added
when kept, so of two near copies the later one is dropped. On Ray every actor holds a :class:`RunIndex`
that is a replica of the run's kept fingerprints, joined to one :class:`DuplicateLog` per run (the runner
keeps it in a small Ray actor on the driver's node) that puts the images every actor keeps in one order:

1. the actor matches a batch against its replica (the image work: on every actor, in parallel);
2. it appends the images that passed to the log, which places them and returns every entry the actor has
   not seen yet, and the samples withdrawn since;
3. it matches each appended image against the unseen entries placed before it; a match drops the image
   (reason ``duplicate``) and withdraws its entry from the log.

So of two near copies kept at the same moment on two actors, the one placed later is dropped: no two kept
images of a run are near copies, whichever actors rendered them. The log does no image work (one call per
batch that kept something); each actor receives every kept fingerprint (about 17 KB each: ~100 MB for the
6k run). Limits: an entry another actor saw before it was withdrawn can still drop a later image (it takes
three near copies within one batch round trip); two drivers sharing an output through claims each hold
their own log (``dermgen audit`` finds what they miss). A sample rendered again (its actor lost, its shard
resubmitted) is never compared with its own entry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from dermgen.filters.dedup import Fingerprint, FingerprintIndex, decode_rgb, fingerprint

__all__ = [
    "AppendResult",
    "DuplicateCandidate",
    "DuplicateLog",
    "DuplicateLogClient",
    "LogEntry",
    "RunIndex",
    "kept_fingerprints",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DuplicateCandidate:
    """One image to match against the run: its sample, its fingerprint, the ``duplicate`` bound that
    applies to it (above it the image is dropped; None: never dropped as a duplicate) and whether it may
    be kept at all (False: another bound already dropped it; it is scored, never added)."""

    sample_id: str
    fingerprint: Fingerprint
    bound: float | None
    eligible: bool = True


@dataclass(frozen=True)
class LogEntry:
    """A kept image in the run's order."""

    position: int
    sample_id: str
    fingerprint: Fingerprint
    actor: str


@dataclass(frozen=True)
class AppendResult:
    """What :meth:`DuplicateLog.append` answers: the positions of the appended images, the entries the
    caller had not seen (its own of this call left out, withdrawn ones too, in order), the samples
    withdrawn since the caller last asked, and the counters to pass next time."""

    positions: list[int]
    unseen: list[LogEntry]
    withdrawn: list[str]
    seen: int
    withdrawn_seen: int


class DuplicateLogClient(Protocol):
    """The two calls an actor makes on its run's log (the log itself, or a proxy to the Ray actor)."""

    def append(
        self, actor: str, seen: int, items: list[tuple[str, Fingerprint]], withdrawn_seen: int
    ) -> AppendResult: ...

    def withdraw(self, sample_ids: list[str]) -> None: ...


class DuplicateLog:
    """The order of a run's kept images across actors. No image work: appends, slices and a set."""

    def __init__(self) -> None:
        self._entries: list[LogEntry] = []
        self._position: dict[str, int] = {}
        self._withdrawn: list[str] = []
        self._withdrawn_set: set[str] = set()
        self._lock = threading.Lock()

    def seed(self, items: Iterable[tuple[str, Fingerprint]]) -> int:
        """Put already committed kept images first (a resumed run); how many were added."""
        added = 0
        with self._lock:
            for sample_id, fp in items:
                if sample_id not in self._position:
                    self._position[sample_id] = len(self._entries)
                    self._entries.append(LogEntry(len(self._entries), sample_id, fp, "committed"))
                    added += 1
        return added

    def append(
        self, actor: str, seen: int, items: list[tuple[str, Fingerprint]], withdrawn_seen: int = 0
    ) -> AppendResult:
        """Place ``items`` (sample id, fingerprint) after every entry so far; a sample already placed (an
        earlier attempt of it) keeps its place. ``seen``: how many entries the caller has already had."""
        with self._lock:
            positions = []
            for sample_id, fp in items:
                pos = self._position.get(sample_id)
                if pos is None:
                    pos = self._position[sample_id] = len(self._entries)
                    self._entries.append(LogEntry(pos, sample_id, fp, actor))
                positions.append(pos)
            own = set(positions)
            unseen = [
                e
                for e in self._entries[seen:]
                if e.position not in own and e.sample_id not in self._withdrawn_set
            ]
            return AppendResult(
                positions,
                unseen,
                self._withdrawn[withdrawn_seen:],
                len(self._entries),
                len(self._withdrawn),
            )

    def withdraw(self, sample_ids: list[str]) -> None:
        """Mark entries dropped after all (a near copy of an entry placed before them)."""
        with self._lock:
            for sample_id in sample_ids:
                if sample_id in self._position and sample_id not in self._withdrawn_set:
                    self._withdrawn_set.add(sample_id)
                    self._withdrawn.append(sample_id)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._entries), "withdrawn": len(self._withdrawn)}


class RunIndex:
    """The run's kept images as one actor knows them; :meth:`check_and_add` is the duplicate decision.

    Without a log it is the whole run's memory (one process). With one (:meth:`join`) it is a replica
    kept in step with the other actors' (module docstring). Thread-safe: a GPU worker post-processes
    two shard calls.
    """

    def __init__(self, actor: str = "local", duplicate_log: DuplicateLogClient | None = None) -> None:
        self.actor = actor
        self._log = duplicate_log
        self._index = FingerprintIndex(both_ways=True)
        self._entry_of: dict[str, int] = {}  # sample id -> entry of the replica
        self._excluded: set[int] = set()  # entries withdrawn: never matched
        self._seen = 0
        self._withdrawn_seen = 0
        self._lock = threading.RLock()
        self.withdrawn = 0  # images this index dropped after the log placed a near copy before them

    def __len__(self) -> int:
        return len(self._index) - len(self._excluded)

    def __getstate__(self) -> dict:  # a filter travels to scoring processes: its lock does not
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def join(self, duplicate_log: DuplicateLogClient, actor: str) -> None:
        """Share the run's log: from now on images are matched against every actor's kept images."""
        with self._lock:
            self._log, self.actor = duplicate_log, actor

    def seed(self, items: Iterable[tuple[str, Fingerprint]]) -> int:
        """Add already committed kept images (a resumed run in one process); how many were added."""
        with self._lock:
            before = len(self._index)
            for sample_id, fp in items:
                self._add(sample_id, fp)
            return len(self._index) - before

    def check_and_add(self, candidates: list[DuplicateCandidate]) -> list[float]:
        """The ``duplicate`` score of each candidate (in order), adding the eligible ones that stay at or
        under their bound: the first image of a pair of near copies is kept, the later one dropped."""
        with self._lock:
            sims: list[float] = []
            passed: list[int] = []
            for i, c in enumerate(candidates):
                sims.append(self._similarity(c))
                if c.eligible and (c.bound is None or sims[-1] <= c.bound):
                    self._add(c.sample_id, c.fingerprint)
                    passed.append(i)
            if passed and self._log is not None:
                self._sync(candidates, passed, sims)
            return sims

    def _similarity(self, c: DuplicateCandidate) -> float:
        own = self._entry_of.get(c.sample_id)
        skip = self._excluded if own is None else self._excluded | {own}
        return self._index.match(c.fingerprint, exclude=skip).similarity

    def _add(self, sample_id: str, fp: Fingerprint) -> None:
        i = self._entry_of.get(sample_id)
        if i is None:
            self._entry_of[sample_id] = len(self._index)
            self._index.add(fp, sample_id)
        else:  # the same sample again (rendered again, or kept after a withdrawal): one entry for it
            self._excluded.discard(i)

    def _exclude(self, sample_id: str) -> None:
        i = self._entry_of.get(sample_id)
        if i is not None:
            self._excluded.add(i)

    def _sync(self, candidates: list[DuplicateCandidate], passed: list[int], sims: list[float]) -> None:
        """Steps 2 and 3 of the module docstring for the candidates that passed the replica (``passed``);
        raises their ``sims`` where an unseen entry placed before them is closer."""
        appended = [candidates[i] for i in passed]
        try:
            res = self._log.append(
                self.actor,
                self._seen,
                [(c.sample_id, c.fingerprint) for c in appended],
                self._withdrawn_seen,
            )
        except Exception as exc:  # noqa: BLE001 - the run goes on, with duplicates caught per actor
            log.warning(
                "run duplicate log unreachable (%s: %s); %s matches its own images only from now on",
                type(exc).__name__,
                exc,
                self.actor,
            )
            self._log = None
            return
        for sample_id in res.withdrawn:
            self._exclude(sample_id)
        delta = FingerprintIndex(both_ways=True)
        for e in res.unseen:
            delta.add(e.fingerprint, e.sample_id)
        withdrawn: list[str] = []
        for c, pos, i in zip(appended, res.positions, passed, strict=True):
            later = {j for j, e in enumerate(res.unseen) if e.position > pos or e.sample_id == c.sample_id}
            if len(later) == len(res.unseen):
                continue
            sim = delta.match(c.fingerprint, exclude=later).similarity
            sims[i] = max(sims[i], sim)
            if c.bound is not None and sim > c.bound:
                withdrawn.append(c.sample_id)
                self._exclude(c.sample_id)
        for e in res.unseen:
            self._add(e.sample_id, e.fingerprint)
        self._seen, self._withdrawn_seen = res.seen, res.withdrawn_seen
        if withdrawn:
            self.withdrawn += len(withdrawn)
            log.info(
                "%s: %d image(s) dropped as near copies of other actors' images", self.actor, len(withdrawn)
            )
            self._log.withdraw(withdrawn)


def kept_fingerprints(store) -> Iterator[tuple[str, Fingerprint]]:
    """(sample id, fingerprint) of every kept image committed in the run at ``store``, in shard order."""
    from dermgen.rundir import RunDir, image_bytes

    rd = RunDir(store)
    for _, table in rd.iter_tables(["sample_id", "status", "kept", "image"]):
        for row in table.to_pylist():
            if row["status"] != "ok" or not row["kept"]:
                continue
            data = image_bytes(rd.store, row["image"])
            rgb = decode_rgb(data) if data is not None else None
            if rgb is not None:
                yield row["sample_id"], fingerprint(rgb)
