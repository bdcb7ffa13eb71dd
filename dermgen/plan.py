"""Planning: expand a manifest into Samples grouped into Shards. Pure and deterministic (no Ray, no torch).

Sample ids are ``<entry>-<index>``; a shard is a contiguous index range of one entry, so its id,
its samples and their seeds follow from the manifest, the run seed and the shard size alone.
A plan holds only shards (an entry's shared `SampleRule` and a range): samples are derived lazily where the
shard renders, so planning costs O(shards) time and memory, not O(images).
Sampler and step count are drawn per block of consecutive samples, so batches stay homogeneous.

Plan versions (recorded in run.json and bound with the rest of the plan; a resumed run keeps its own):
  v1  blocks of `block` (default 8) counted from index 0 of each entry; noise drawn on the CPU.
  v2  blocks counted from each shard's start, `block` defaulting to the batch size, so a shard renders in
      full batches except at its tail; noise drawn on the render device. The default for new runs.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dermgen.manifest import Entry, Manifest, paused_gc

DEFAULT_SHARD_SIZE = 64
DEFAULT_BLOCK = 8
DEFAULT_CAP_FACTOR = 3.0
PLAN_VERSIONS = (1, 2)
DEFAULT_PLAN_VERSION = 2  # for new runs; plan_run itself defaults to 1, the rule existing runs were made with


@dataclass(frozen=True)
class Sample:
    sample_id: str
    entry_id: str
    index: int
    label: str
    prompt: str
    negative_prompt: str
    seed: int
    sampler: str
    steps: int
    cfg_scale: float
    width: int
    height: int
    loras: tuple[tuple[str, float], ...] = ()
    tags: tuple[str, ...] = ()
    skin_tones: tuple[str, ...] = ()  # groups the image must show (the entry's expect); () = any

    @property
    def batch_key(self) -> tuple:
        """Samples with equal keys can share one diffusion batch."""
        return (self.sampler, self.steps, self.cfg_scale, self.width, self.height, self.loras)


class SampleRule:
    """What derives an entry's samples: the entry, the run seed, the output size and the plan's block rule.

    One per entry, shared by all of its shards; `sample(index, shard_start)` equals `make_sample`, with the
    per-entry parts (seed base, LoRAs, tags) computed once, on first use (so where the shard renders: the
    driver only builds the rule).
    """

    __slots__ = ("entry", "run_seed", "block", "size", "version", "_const")

    def __init__(self, entry: Entry, run_seed: int, block: int, size: int | None, version: int = 1) -> None:
        self.entry, self.run_seed, self.block, self.size, self.version = entry, run_seed, block, size, version
        self._const: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"SampleRule({self.entry.id!r}, run_seed={self.run_seed}, block={self.block}, v{self.version})"

    def _derived(self) -> dict[str, Any]:
        if self._const is None:
            e = self.entry
            w, h = (self.size, self.size) if self.size else e.width_height
            self._const = {
                "entry_id": e.id,
                "label": e.label,
                "prompt": e.prompt,
                "negative_prompt": e.negative_prompt,
                "cfg_scale": float(e.cfg_scale),
                "width": w,
                "height": h,
                "loras": tuple((lr.path, float(lr.scale)) for lr in e.loras),
                "tags": tuple(e.tags),
                "skin_tones": tuple(e.expect.skin_tone) if e.expect else (),
                "_seed_base": entry_seed_base(e, self.run_seed),
            }
        return self._const

    def _key(self) -> tuple:
        return (self.entry.id, self.run_seed, self.block, self.size, self.version)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SampleRule) and self._key() == other._key() and self.entry == other.entry

    def __hash__(self) -> int:
        return hash(self._key())

    def sample(self, index: int, shard_start: int) -> Sample:
        """Sample `index` of the entry, in a shard starting at `shard_start` (used by plan v2 only)."""
        e = self.entry
        const = dict(self._derived())
        seed_base = const.pop("_seed_base")
        rng = random.Random(
            _block_key(e, index, self.run_seed, self.block, None if self.version == 1 else shard_start)
        )
        sampler = e.samplers[rng.randrange(len(e.samplers))]
        lo, hi = e.steps_bounds
        return Sample(
            sample_id=f"{e.id}-{index:07d}",
            index=index,
            seed=seed_base + index,
            sampler=sampler,
            steps=rng.randint(lo, hi),
            **const,
        )


@dataclass(frozen=True, slots=True)
class Shard:
    """A contiguous index range [start, end) of one entry; its samples are derived on demand.

    The driver holds only this (a shared `SampleRule` and two ints), so a plan costs O(shards) memory
    whatever the shard size; `samples` is computed where the shard renders, identical every time.
    """

    rule: SampleRule
    start: int
    end: int  # exclusive
    topup: bool = False

    @property
    def shard_id(self) -> str:
        return f"{self.rule.entry.id}-{self.start:07d}-{self.end:07d}"

    @property
    def entry_id(self) -> str:
        return self.rule.entry.id

    @property
    def label(self) -> str:
        return self.rule.entry.label

    @property
    def samples(self) -> tuple[Sample, ...]:
        """The shard's samples, derived from its rule (not cached: each access recomputes them)."""
        return tuple(self.rule.sample(i, self.start) for i in range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start

    def __repr__(self) -> str:
        return f"Shard({self.shard_id!r}{', topup' if self.topup else ''})"


@dataclass
class Plan:
    """Per-entry targets of kept images and the base shards that cover them."""

    manifest: Manifest
    run_seed: int
    shard_size: int
    block: int
    size: int | None
    targets: dict[str, int]
    shards: list[Shard]
    cap_factor: float = DEFAULT_CAP_FACTOR
    version: int = 1
    rules: dict[str, SampleRule] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._entries: dict[str, Entry] = {e.id: e for e in self.manifest.entries}

    @property
    def total_target(self) -> int:
        return sum(self.targets.values())

    def entry(self, entry_id: str) -> Entry:
        """The manifest entry with this id (a dict lookup)."""
        return self._entries[entry_id]

    def rule(self, entry_id: str) -> SampleRule:
        """The shared SampleRule of an entry."""
        rule = self.rules.get(entry_id)
        if rule is None:
            rule = SampleRule(self.entry(entry_id), self.run_seed, self.block, self.size, self.version)
            self.rules[entry_id] = rule
        return rule

    def targets_by_label(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.manifest.entries:
            if self.targets.get(e.id):
                out[e.label] = out.get(e.label, 0) + self.targets[e.id]
        return out

    def shards_by_entry(self) -> dict[str, int]:
        """Base shards per entry id, counted in one pass."""
        out: dict[str, int] = {}
        for shard in self.shards:
            out[shard.rule.entry.id] = out.get(shard.rule.entry.id, 0) + 1
        return out

    def cap(self, entry_id: str) -> int:
        """Most samples an entry may use to reach its kept target."""
        return max(self.targets[entry_id], int(self.targets[entry_id] * self.cap_factor))

    def topup_shard(self, entry_id: str, start: int) -> Shard | None:
        """The next extra shard for an entry starting at `start`, or None once the cap is reached."""
        target, cap = self.targets[entry_id], self.cap(entry_id)
        if start >= cap:
            return None
        chunk = min(self.shard_size, max(self.block, -(-target // 2)))
        return Shard(self.rule(entry_id), start, min(start + chunk, cap), topup=True)


def entry_seed_base(entry: Entry, run_seed: int) -> int:
    """Explicit `seed_base` wins (reproduces given seeds); else a stable hash of run seed and entry id."""
    if entry.seed_base is not None:
        return entry.seed_base
    digest = hashlib.sha256(f"{run_seed}:{entry.id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _block_key(entry: Entry, index: int, run_seed: int, block: int, shard_start: int | None) -> str:
    """What seeds the sampler/steps draw: v1 (shard_start None) blocks from the entry's index 0, v2 blocks
    from the shard's start."""
    if shard_start is None:
        return f"{run_seed}:{entry.id}:{index // block}"
    return f"{run_seed}:{entry.id}:{shard_start}+{(index - shard_start) // block}"


def make_sample(
    entry: Entry, index: int, run_seed: int, block: int, size: int | None, shard_start: int | None = None
) -> Sample:
    """One sample on its own (reference form; shards derive theirs through a shared SampleRule)."""
    rng = random.Random(_block_key(entry, index, run_seed, block, shard_start))
    sampler = entry.samplers[rng.randrange(len(entry.samplers))]
    lo, hi = entry.steps_bounds
    steps = rng.randint(lo, hi)
    w, h = (size, size) if size else entry.width_height
    return Sample(
        sample_id=f"{entry.id}-{index:07d}",
        entry_id=entry.id,
        index=index,
        label=entry.label,
        prompt=entry.prompt,
        negative_prompt=entry.negative_prompt,
        seed=entry_seed_base(entry, run_seed) + index,
        sampler=sampler,
        steps=steps,
        cfg_scale=float(entry.cfg_scale),
        width=w,
        height=h,
        loras=tuple((lr.path, float(lr.scale)) for lr in entry.loras),
        tags=tuple(entry.tags),
        skin_tones=tuple(entry.expect.skin_tone) if entry.expect else (),
    )


def make_shard(
    entry: Entry,
    start: int,
    end: int,
    run_seed: int,
    block: int,
    size: int | None,
    topup: bool = False,
    version: int = 1,
) -> Shard:
    return Shard(SampleRule(entry, run_seed, block, size, version), start, end, topup)


def limit_counts(manifest: Manifest, limit: int | None) -> dict[str, int]:
    """Targets per entry; with `limit`, N images split in proportion to counts (largest remainder)."""
    counts = {e.id: e.count for e in manifest.entries}
    if limit is None or limit >= manifest.total:
        return counts
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    total = manifest.total
    exact = {k: limit * c / total for k, c in counts.items()}
    out = {k: int(v) for k, v in exact.items()}
    if limit >= len(counts):  # every entry gets at least one image
        for k in out:
            out[k] = max(out[k], 1)
    while sum(out.values()) > limit:
        k = max((k for k in out if out[k] > 1), key=lambda k: (out[k] - exact[k], k))
        out[k] -= 1
    order = sorted(counts, key=lambda k: (-(exact[k] - int(exact[k])), k))
    i = 0
    while sum(out.values()) < limit:
        out[order[i % len(order)]] += 1
        i += 1
    return out


def plan_run(
    manifest: Manifest,
    *,
    run_seed: int = 0,
    limit: int | None = None,
    size: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    block: int = DEFAULT_BLOCK,
    cap_factor: float = DEFAULT_CAP_FACTOR,
    version: int = 1,
) -> Plan:
    """Expand a manifest into shards covering each entry's target; same inputs, same plan."""
    if version not in PLAN_VERSIONS:
        raise ValueError(f"plan version must be one of {PLAN_VERSIONS}, got {version}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    targets = limit_counts(manifest, limit)
    rules: dict[str, SampleRule] = {}
    shards: list[Shard] = []
    with paused_gc():  # millions of small objects and no cycles among them
        for entry in manifest.entries:
            n = targets[entry.id]
            if not n:
                continue
            rule = rules[entry.id] = SampleRule(entry, run_seed, block, size, version)
            shards.extend(Shard(rule, start, min(start + shard_size, n)) for start in range(0, n, shard_size))
    return Plan(manifest, run_seed, shard_size, block, size, targets, shards, cap_factor, version, rules)


def batches(shard: Shard, batch_size: int) -> Iterator[list[Sample]]:
    """Split a shard into homogeneous batches of at most `batch_size`, in sample order within groups."""
    groups: dict[tuple, list[Sample]] = {}
    for s in shard.samples:
        groups.setdefault(s.batch_key, []).append(s)
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            yield group[i : i + batch_size]
