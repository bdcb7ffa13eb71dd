"""Skin-tone groups of the Individual Typology Angle (ITA), and the per-run counts built on them.

The one owner of the group names and bounds (light: no image libraries; the manifest, the worker, the
summary, the report and the dataset card use it; the scorer is :mod:`dermgen.filters.skintone`).
ITA = atan((L* - 50) / b*) in degrees; groups (Chardon et al. 1991; Del Bino and Bernerd 2013):

    very_light > 55 >= light > 41 >= intermediate > 28 >= tan > 10 >= brown > -30 >= dark

A value exactly on a boundary belongs to the darker group (ITA 55 is ``light``).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

__all__ = [
    "SKIN_TONES",
    "SKIN_TONE_BOUNDS",
    "SKIN_TONE_REASON",
    "ita_degrees",
    "skin_tone_of",
    "UNMEASURED",
    "distribution_status",
    "format_tone_table",
    "iter_tone_rows",
    "read_tone_rows",
    "skin_tone_reasons",
    "skin_tone_summary",
    "ToneTally",
    "tone_counts",
    "tone_of_row",
]

# group -> (lower bound exclusive, upper bound inclusive) of ITA in degrees, lightest first
SKIN_TONE_BOUNDS: dict[str, tuple[float, float]] = {
    "very_light": (55.0, math.inf),
    "light": (41.0, 55.0),
    "intermediate": (28.0, 41.0),
    "tan": (10.0, 28.0),
    "brown": (-30.0, 10.0),
    "dark": (-math.inf, -30.0),
}
SKIN_TONES: tuple[str, ...] = tuple(SKIN_TONE_BOUNDS)
SKIN_TONE_REASON = "skin_tone"  # the drop reason of an image outside its entry's expected groups


def ita_degrees(lightness: float, b_star: float) -> float:
    """ITA = atan((L* - 50) / b*) in degrees, -90..90.

    atan2-safe: b* <= 0 (a blue or neutral cast, never real skin) is taken as +0, so the angle goes to
    +90 (L* > 50) or -90 (L* < 50) instead of dividing by zero or flipping sign.
    """
    return math.degrees(math.atan2(lightness - 50.0, max(float(b_star), 1e-9)))


def skin_tone_of(ita: float | None) -> str | None:
    """The group name of an ITA value (None for None or NaN); a boundary value goes to the darker group."""
    if ita is None or math.isnan(ita):
        return None
    for name, (lo, hi) in SKIN_TONE_BOUNDS.items():
        if lo < ita <= hi:
            return name
    return "very_light" if ita > 0 else "dark"  # +-inf


def skin_tone_reasons(ita: float | None, expected: Sequence[str] | None) -> list[str]:
    """``["skin_tone"]`` when ``expected`` groups are given and ``ita`` is in none of them (or unmeasured)."""
    if not expected:
        return []
    return [] if skin_tone_of(ita) in expected else [SKIN_TONE_REASON]


# ------------------------------------------------------------------------------------------ run counts

UNMEASURED = "unmeasured"  # rows whose ITA was not computed (filter off, failed render)
_COLUMNS = ("entry_id", "label", "status", "kept", "drop_reasons", "skin_tone", "scores")


def tone_of_row(row: Mapping[str, Any]) -> str:
    """The row's skin-tone group: its ``skin_tone`` column, else the group of ``scores.ita``."""
    tone = row.get("skin_tone")
    if tone is None:
        tone = skin_tone_of((row.get("scores") or {}).get("ita"))
    return tone or UNMEASURED


def iter_tone_rows(store: Any, extra: Sequence[str] = (), workers: int = 1) -> Iterator[dict[str, Any]]:
    """The committed rows of a run, one shard at a time, with only the columns the skin-tone counts need
    and ``extra`` ones (`workers` shards read at once).

    Columns a shard lacks (runs made before skin tone was measured) are null in its rows.
    """
    from dermgen.rundir import RunDir

    rd = store if isinstance(store, RunDir) else RunDir(store)
    for _, table in rd.iter_tables(list(dict.fromkeys((*_COLUMNS, *extra))), workers=workers):
        yield from table.to_pylist()


def read_tone_rows(store: Any, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    """`iter_tone_rows` as a list (small runs: the dataset card)."""
    return list(iter_tone_rows(store, extra))


class ToneTally:
    """The counts of `tone_counts`, added one row at a time (memory: one counter per label, entry, group)."""

    def __init__(self) -> None:
        self.labels: dict[str, Counter[str]] = defaultdict(Counter)
        self.entries: dict[str, Counter[str]] = defaultdict(Counter)
        self.dropped: Counter[str] = Counter()
        self.dropped_groups: dict[str, Counter[str]] = defaultdict(Counter)

    def add(self, r: Mapping[str, Any]) -> None:
        if r.get("status", "ok") != "ok":
            return
        tone = tone_of_row(r)
        if r.get("kept"):
            self.labels[r["label"]][tone] += 1
            self.entries[r["entry_id"]][tone] += 1
        elif SKIN_TONE_REASON in (r.get("drop_reasons") or []):
            self.dropped[r["entry_id"]] += 1
            self.dropped_groups[r["entry_id"]][tone] += 1

    def counts(self) -> dict[str, Any]:
        order = {g: i for i, g in enumerate((*SKIN_TONES, UNMEASURED))}

        def ordered(c: Counter[str]) -> dict[str, int]:
            return {g: c[g] for g in sorted(c, key=lambda g: order.get(g, len(order)))}

        return {
            "groups": list(SKIN_TONES),
            "kept_by_label": {k: ordered(v) for k, v in sorted(self.labels.items())},
            "kept_by_entry": {k: ordered(v) for k, v in sorted(self.entries.items())},
            "dropped_skin_tone_by_entry": dict(sorted(self.dropped.items())),
            "dropped_skin_tone_groups": {k: ordered(v) for k, v in sorted(self.dropped_groups.items())},
        }


def tone_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Kept images per label x group and per entry x group, and per entry the ``skin_tone`` drops.

    Groups are listed lightest first, then ``unmeasured``; only groups that occur appear. `rows` may be
    a generator (it is read once).
    """
    tally = ToneTally()
    for r in rows:
        tally.add(r)
    return tally.counts()


def distribution_status(manifest: Any, counts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each manifest ``distribution`` target against the measured kept counts: fraction, met, shortfall.

    ``shortfall`` is how many more kept images inside the groups the label needs to reach the fraction.
    ``manifest``: a :class:`dermgen.manifest.Manifest` or its JSON dump (run.json's ``manifest``).
    """
    shares = manifest.get("distribution") if isinstance(manifest, Mapping) else manifest.distribution
    out = []
    for share in shares or []:
        share = share if isinstance(share, Mapping) else share.model_dump()
        label, groups, want = share.get("label"), list(share["skin_tone"]), float(share["min_fraction"])
        total = inside = 0
        for lab, by_group in counts["kept_by_label"].items():
            if label is None or lab == label:
                total += sum(by_group.values())
                inside += sum(n for g, n in by_group.items() if g in groups)
        fraction = inside / total if total else 0.0
        need = 0
        if fraction < want:
            need = total + 1 if want >= 1 else math.ceil((want * total - inside) / (1 - want) - 1e-9)
        out.append(
            {
                "label": label,
                "skin_tone": groups,
                "min_fraction": want,
                "kept": total,
                "kept_inside": inside,
                "fraction": round(fraction, 4),
                "met": fraction >= want and total > 0,
                "shortfall": max(need, 0),
            }
        )
    return out


def skin_tone_summary(store: Any, manifest: Any, workers: int = 1) -> dict[str, Any]:
    """The ``skin_tone`` section of summary.json (and of ``dermgen inspect --json``), streamed over the
    shards (`workers` read at once)."""
    counts = tone_counts(iter_tone_rows(store, workers=workers))
    counts["distribution"] = distribution_status(manifest, counts)
    counts["distribution_met"] = all(d["met"] for d in counts["distribution"])
    return counts


def format_tone_table(section: Mapping[str, Any]) -> str:
    """Plain-text tables of kept images per label x group and per entry x group (for ``dermgen inspect``)."""
    used = [g for g in (*SKIN_TONES, UNMEASURED) if any(g in c for c in section["kept_by_entry"].values())]
    lines = []
    for title, table in (("label", section["kept_by_label"]), ("entry", section["kept_by_entry"])):
        width = max([len(k) for k in table] + [len(title)])
        lines.append(f"kept per {title} and skin tone:")
        lines.append(f"  {title:{width}s} " + " ".join(f"{g:>12s}" for g in used))
        for k, c in table.items():
            lines.append(f"  {k:{width}s} " + " ".join(f"{c.get(g, 0):>12,d}" for g in used))
    drops = section.get("dropped_skin_tone_by_entry") or {}
    if drops:
        lines.append("dropped for skin_tone: " + ", ".join(f"{k} {n:,d}" for k, n in drops.items()))
    for d in section.get("distribution") or []:
        lines.append(
            f"distribution {d['label'] or 'all labels'} {'+'.join(d['skin_tone'])} >= {d['min_fraction']:g}: "
            f"{d['kept_inside']:,d} of {d['kept']:,d} kept ({d['fraction']:.3f}) "
            + ("met" if d["met"] else f"SHORTFALL of {d['shortfall']:,d} image(s)")
        )
    return "\n".join(lines)
