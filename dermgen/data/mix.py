"""Mix several map-style sources (generated runs, real folders) with ratios, deterministically.

`mix_datasets({"synthetic": run_ds, "real": folder_ds}, ratios={"synthetic": 0.75, "real": 0.25},
total=4000, seed=0)` draws round(0.75 * 4000) items from the run and the rest from the folder: counts by
largest remainder so they add up to `total`; each source's items are a seeded random subset (without
replacement; with ``allow_repeats`` a source smaller than its count is repeated whole, then topped up),
and the mixed order is shuffled with the same seed. Without `total` the mix is the largest one that
repeats nothing. Explicit `counts` skip the ratio arithmetic.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dermgen.data.torch_dataset import ImageDataset
from dermgen.errors import ConfigError

log = logging.getLogger(__name__)


def counts_for_ratios(ratios: Sequence[float], total: int) -> list[int]:
    """Integer counts proportional to `ratios` that sum to `total` (largest-remainder rounding)."""
    if total < 0:
        raise ConfigError(f"total: {total} is negative")
    if any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ConfigError(f"ratios: {list(ratios)} must be >= 0 with a positive sum")
    s = float(sum(ratios))
    exact = [total * r / s for r in ratios]
    counts = [int(np.floor(x)) for x in exact]
    rest = total - sum(counts)
    by_remainder = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[:rest]:
        counts[i] += 1
    return counts


def _pick(
    n_available: int, count: int, rng: np.random.Generator, allow_repeats: bool, name: str
) -> list[int]:
    if count <= n_available:
        return [int(i) for i in rng.permutation(n_available)[:count]]
    if not allow_repeats:
        raise ConfigError(
            f"source {name!r}: {count} items wanted but it has {n_available}; lower total/ratio or pass "
            "allow_repeats=True"
        )
    if n_available == 0:
        raise ConfigError(f"source {name!r} is empty")
    reps, rest = divmod(count, n_available)
    out = [int(i) for _ in range(reps) for i in rng.permutation(n_available)]
    return out + [int(i) for i in rng.permutation(n_available)[:rest]]


class MixedDataset(ImageDataset):
    """Items drawn from several ImageDatasets; `records[i]["mix_source"]` names where item i came from.

    Each item is yielded by its own source, with that source's transform and output settings, so give
    the sources the same ones.
    """

    def __init__(
        self,
        sources: Mapping[str, ImageDataset],
        counts: Mapping[str, int],
        *,
        seed: int = 0,
        allow_repeats: bool = False,
        shuffle: bool = True,
    ) -> None:
        if not sources:
            raise ConfigError("sources: nothing to mix")
        unknown = set(counts) - set(sources)
        if unknown:
            raise ConfigError(f"counts: {sorted(unknown)} name no source (sources: {list(sources)})")
        self.sources = dict(sources)
        self.names = list(sources)
        self.counts = {name: int(counts.get(name, 0)) for name in self.names}
        self.seed = seed
        items: list[tuple[int, int]] = []
        for k, name in enumerate(self.names):
            rng = np.random.default_rng([seed, k])
            picked = _pick(len(self.sources[name]), self.counts[name], rng, allow_repeats, name)
            items.extend((k, i) for i in picked)
        if shuffle:
            perm = np.random.default_rng([seed, len(self.names), 1]).permutation(len(items))
            items = [items[int(j)] for j in perm]
        self.items = items
        self.records = []
        for k, i in items:
            rec = dict(self.sources[self.names[k]].records[i])
            rec["mix_source"] = self.names[k]
            self.records.append(rec)
        first = self.sources[self.names[0]]
        self.formatter = first.formatter
        labels = {tuple(s.label_map.names) for s in self.sources.values()}
        if len(labels) > 1:
            raise ConfigError(f"sources use different label maps {sorted(labels)}; give them the same one")

    def image_bytes(self, index: int) -> bytes:
        k, i = self.items[index]
        return self.sources[self.names[k]].image_bytes(i)

    def load_image(self, index: int):
        k, i = self.items[index]
        return self.sources[self.names[k]].load_image(i)

    def __getitem__(self, index: int) -> Any:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        k, i = self.items[index]
        source = self.sources[self.names[k]]
        return source.formatter(source.load_image(i), self.records[index])

    def with_format(self, **kwargs: Any) -> MixedDataset:
        """A copy whose sources all yield items the given way (see ImageDataset.with_format)."""
        import copy

        clone = copy.copy(self)
        clone.sources = {name: ds.with_format(**kwargs) for name, ds in self.sources.items()}
        clone.formatter = clone.sources[self.names[0]].formatter
        return clone

    def composition(self) -> dict[str, dict[str, Any]]:
        """Per source: items drawn, their share of the mix, and labels."""
        total = max(1, len(self.items))
        out: dict[str, dict[str, Any]] = {}
        for name in self.names:
            recs = [r for r in self.records if r["mix_source"] == name]
            labels: dict[str, int] = {}
            for r in recs:
                lab = self.label_map.name(int(r["label_id"]))
                labels[lab] = labels.get(lab, 0) + 1
            out[name] = {
                "count": len(recs),
                "fraction": len(recs) / total,
                "available": len(self.sources[name]),
                "labels": dict(sorted(labels.items())),
            }
        return out


def mix_datasets(
    sources: Mapping[str, ImageDataset],
    *,
    ratios: Mapping[str, float] | None = None,
    total: int | None = None,
    counts: Mapping[str, int] | None = None,
    seed: int = 0,
    allow_repeats: bool = False,
    shuffle: bool = True,
) -> MixedDataset:
    """Mix named sources by `ratios` (of `total`, or the largest total without repeats) or exact `counts`."""
    if (ratios is None) == (counts is None):
        raise ConfigError("mix_datasets: give either ratios or counts")
    if counts is None:
        assert ratios is not None
        unknown = set(ratios) - set(sources)
        if unknown:
            raise ConfigError(f"ratios: {sorted(unknown)} name no source (sources: {list(sources)})")
        names = list(sources)
        r = [float(ratios.get(n, 0.0)) for n in names]
        if total is None:
            s = sum(r)
            if s <= 0:
                raise ConfigError(f"ratios: {dict(ratios)} must have a positive sum")
            total = int(min(len(sources[n]) * s / ri for n, ri in zip(names, r, strict=True) if ri > 0))
            # rounding may push one source one item over what it has; step down until it fits
            while total > 0 and any(
                c > len(sources[n]) for n, c in zip(names, counts_for_ratios(r, total), strict=True)
            ):
                total -= 1
        counts = dict(zip(names, counts_for_ratios(r, total), strict=True))
    ds = MixedDataset(sources, counts, seed=seed, allow_repeats=allow_repeats, shuffle=shuffle)
    log.info(
        "mixed %d items: %s",
        len(ds),
        ", ".join(f"{n} {c['count']} ({c['fraction']:.0%})" for n, c in ds.composition().items()),
    )
    return ds
