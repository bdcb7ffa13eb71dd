"""Which shard next: base shards first, then top-up shards until each entry's KEPT target is met.

Pure bookkeeping (no Ray): the runner feeds it results; resume feeds it what is already committed.
An entry that cannot reach its target within `cap_factor` x target samples ends with a shortfall.

With a `gate` (`dermgen.leases.ShardLeases`: shard claims), a second driver may work on the same output:
before a shard is handed out the gate claims it; a shard another driver committed meanwhile is adopted
(its counts accounted, nothing rendered), and one under another driver's live claim is deferred and
offered again by `retry_deferred` (that driver may finish it, or die and let its claim expire). The run
is finished only when no shard is pending, in flight or deferred.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from dermgen.plan import Plan, Shard


class ShardGate(Protocol):
    """Claims shards across drivers (`dermgen.leases.ShardLeases`)."""

    def acquire(self, shard_id: str) -> str:
        """ "mine", "committed" (by another driver) or "taken" (under another driver's live claim)."""

    def release(self, shard_id: str) -> None: ...

    def prefetch(self, shard_ids: list[str]) -> None:
        """Claim these (the next to be handed out) at once, ahead of `acquire`."""

    def committed_summary(self, shard_id: str) -> dict[str, Any]: ...


@dataclass
class EntryProgress:
    target: int
    label: str
    generated: int = 0  # rows committed (ok + failed)
    ok: int = 0
    kept: int = 0
    frontier: int = 0  # first index not yet planned
    inflight: int = 0
    pending: int = 0  # shards of this entry waiting in the queue (or deferred behind another driver)
    base_left: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.kept >= self.target

    def to_dict(self, cap: int) -> dict[str, Any]:
        return {
            "label": self.label,
            "target": self.target,
            "kept": self.kept,
            "generated": self.generated,
            "failed": self.generated - self.ok,
            "cap": cap,
            "shortfall": max(0, self.target - self.kept),
            "drop_reasons": dict(sorted(self.reasons.items())),
        }


class ShardScheduler:
    def __init__(
        self,
        plan: Plan,
        committed: dict[str, dict[str, Any]] | None = None,
        topup: bool = True,
        gate: ShardGate | None = None,
    ) -> None:
        """`committed`: shard_id -> summary of shards already in the store (resume). `gate`: shard claims
        shared with other drivers on the same output (None: this driver is alone)."""
        self.plan = plan
        self.topup = topup
        self.gate = gate
        self.deferred: deque[Shard] = deque()  # under another driver's live claim: offered again later
        self.adopted = 0  # shards another driver committed while this one ran
        committed = committed or {}
        self.entries: dict[str, EntryProgress] = {}
        for e in plan.manifest.entries:
            if plan.targets.get(e.id):
                self.entries[e.id] = EntryProgress(plan.targets[e.id], e.label, frontier=plan.targets[e.id])
        self.pending: deque[Shard] = deque()
        self.inflight: dict[str, Shard] = {}
        self.skipped = 0
        self._remaining = 0  # samples in pending + inflight shards, kept as shards move
        for shard in plan.shards:
            if committed and shard.shard_id in committed:
                self.skipped += 1
            else:
                self._push(shard)
                self.entries[shard.entry_id].base_left += 1
        for summary in committed.values():
            self._account(summary)
            ep = self.entries.get(summary["entry_id"])
            if ep is not None:
                ep.frontier = max(ep.frontier, int(summary.get("end", 0)))
        for entry_id in self.entries:
            self._maybe_topup(entry_id)

    def _account(self, s: dict[str, Any]) -> None:
        ep = self.entries.get(s["entry_id"])
        if ep is None:
            return
        ep.generated += s["planned"]
        ep.ok += s["ok"]
        ep.kept += s["kept"]
        for k, v in (s.get("drop_reasons") or {}).items():
            ep.reasons[k] = ep.reasons.get(k, 0) + v

    def _push(self, shard: Shard, first: bool = False) -> None:
        (self.pending.appendleft if first else self.pending.append)(shard)
        self.entries[shard.entry_id].pending += 1
        self._remaining += len(shard)

    def next_shard(self) -> Shard | None:
        """The next shard to render (O(1) without a gate; with one, shards that another driver committed
        or holds are passed over). None when nothing can be handed out now (see `waiting`)."""
        while self.pending:
            shard = self.pending.popleft()
            ep = self.entries[shard.entry_id]
            if self.gate is not None:
                verdict = self.gate.acquire(shard.shard_id)
                if verdict == "taken":
                    self.deferred.append(shard)  # still counted as pending for its entry
                    continue
                if verdict == "committed":
                    ep.pending -= 1
                    self._adopt(shard, self.gate.committed_summary(shard.shard_id))
                    continue
            ep.pending -= 1
            self.inflight[shard.shard_id] = shard
            ep.inflight += 1
            return shard
        return None

    def prefetch(self, n: int) -> None:
        """Let the gate claim the next `n` pending shards at once (a pool about to take several)."""
        if self.gate is not None and n > 1 and self.pending and hasattr(self.gate, "prefetch"):
            self.gate.prefetch([s.shard_id for s in itertools.islice(self.pending, n)])

    def _adopt(self, shard: Shard, summary: dict[str, Any]) -> None:
        """Account a shard that another driver committed, as if this driver had."""
        self._remaining -= len(shard)
        self.adopted += 1
        ep = self.entries[shard.entry_id]
        if not shard.topup:
            ep.base_left -= 1
        ep.frontier = max(ep.frontier, shard.end)
        self._account(summary)
        self._maybe_topup(shard.entry_id)

    @property
    def waiting(self) -> bool:
        """Nothing to hand out now, but shards deferred behind another driver's claims remain."""
        return not self.pending and bool(self.deferred)

    def retry_deferred(self) -> int:
        """Offer the deferred shards again (another driver may have committed them, or died). Returns
        how many."""
        n = len(self.deferred)
        self.pending.extend(self.deferred)
        self.deferred.clear()
        return n

    def requeue(self, shard: Shard) -> None:
        """A shard whose attempt died: run it again (first, so it is not starved)."""
        if self.inflight.pop(shard.shard_id, None) is not None:
            self.entries[shard.entry_id].inflight -= 1
            self._remaining -= len(shard)
        self._push(shard, first=True)

    def complete(self, shard: Shard, summary: dict[str, Any]) -> None:
        """Account a finished shard and plan its entry's top-ups if needed (O(1) plus the top-ups)."""
        if self.inflight.pop(shard.shard_id, None) is None:
            return
        if self.gate is not None:
            self.gate.release(shard.shard_id)
        self._remaining -= len(shard)
        ep = self.entries[shard.entry_id]
        ep.inflight -= 1
        if not shard.topup:
            ep.base_left -= 1
        self._account(summary)
        self._maybe_topup(shard.entry_id)

    def _maybe_topup(self, entry_id: str) -> None:
        ep = self.entries[entry_id]
        if not self.topup or ep.done or ep.inflight or ep.base_left > 0 or ep.pending:
            return
        rate = max(ep.kept / ep.generated, 0.05) if ep.generated else 1.0
        need = math.ceil((ep.target - ep.kept) / rate * 1.1)
        planned = 0
        while planned < need:
            shard = self.plan.topup_shard(entry_id, ep.frontier)
            if shard is None:
                break
            self._push(shard)
            ep.frontier = shard.end
            planned += len(shard)

    @property
    def finished(self) -> bool:
        return not self.pending and not self.inflight and not self.deferred

    @property
    def remaining_samples(self) -> int:
        return self._remaining

    def report(self) -> dict[str, dict[str, Any]]:
        return {k: ep.to_dict(self.plan.cap(k)) for k, ep in self.entries.items()}

    def shortfalls(self) -> dict[str, int]:
        return {k: ep.target - ep.kept for k, ep in self.entries.items() if ep.kept < ep.target}
