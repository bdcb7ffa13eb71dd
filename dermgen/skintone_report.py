"""The skin-tone section of ``dermgen report``: label x group counts, distribution targets, one contact
sheet of kept images per measured skin-tone group.

Self-contained HTML (thumbnails as data URIs), using the page's table and contact-sheet styles. Only the
sampled images are read from the store; the choice is deterministic (same run, same images).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from dermgen.shards import image_key
from dermgen.skintone import (
    SKIN_TONE_BOUNDS,
    SKIN_TONES,
    UNMEASURED,
    ToneTally,
    distribution_status,
    tone_of_row,
)

__all__ = ["PER_GROUP", "SkinToneSample", "skin_tone_html"]

log = logging.getLogger(__name__)

PER_GROUP = 12  # thumbnails per skin-tone group
THUMB_SIDE = 128


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=l' if i == 0 else ''}>{_e(c)}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _thumb(store: Any, row: Mapping[str, Any]) -> str | None:
    """A JPEG data URI of a kept row's image, or None when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        raw = store.get(image_key(row["sample_id"], row["label"], row["attempt_id"], True))
        with Image.open(io.BytesIO(raw)) as im:
            im = im.convert("RGB").resize((THUMB_SIDE, THUMB_SIDE), Image.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    except (KeyError, OSError, ValueError, UnidentifiedImageError) as exc:
        log.warning("report: no skin-tone thumbnail of %s: %s", row.get("sample_id"), exc)
        return None


def _group_title(group: str) -> str:
    if group not in SKIN_TONE_BOUNDS:
        return group
    lo, hi = SKIN_TONE_BOUNDS[group]
    span = (
        f"ITA > {lo:g}°"
        if hi == float("inf")
        else f"ITA <= {hi:g}°"
        if lo == -float("inf")
        else f"{lo:g}° < ITA <= {hi:g}°"
    )
    return f"{group} ({span})"


def _rank(sample_id: str) -> str:
    return hashlib.sha256(sample_id.encode()).hexdigest()


class SkinToneSample:
    """The section's counts and, per skin-tone group, the best-ranked `per_group` kept rows, added one
    row at a time (memory: counters and `per_group` rows per group, however large the run)."""

    def __init__(self, per_group: int = PER_GROUP) -> None:
        self.per_group = per_group
        self.tally = ToneTally()
        self.pools: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        self.pool_sizes: dict[str, int] = defaultdict(int)

    def add(self, r: Mapping[str, Any]) -> None:
        self.tally.add(r)
        if r.get("status") == "ok" and r.get("kept") and r.get("attempt_id"):
            group = tone_of_row(r)
            self.pool_sizes[group] += 1
            pool = self.pools[group]
            pool.append((_rank(r["sample_id"]), dict(r)))
            if len(pool) > 4 * self.per_group:
                pool.sort(key=lambda p: p[0])
                del pool[self.per_group :]

    def html(self, store: Any, manifest: Mapping[str, Any], workers: int = 1) -> str:
        """The section's HTML (only the sampled images are read, `workers` at once)."""
        return _section(store, self, manifest, workers)


def skin_tone_html(
    store: Any, rows: Iterable[Mapping[str, Any]], manifest: Mapping[str, Any], per_group: int = PER_GROUP
) -> str:
    """The section's HTML; ``rows`` need sample_id, attempt_id, entry_id, label, status, kept, drop_reasons
    and skin_tone or scores (rows of runs made before skin tone was measured show as unmeasured)."""
    sample = SkinToneSample(per_group)
    for r in rows:
        sample.add(r)
    return sample.html(store, manifest)


def _section(store: Any, sample: SkinToneSample, manifest: Mapping[str, Any], workers: int) -> str:
    from dermgen.rundir import bounded_map

    counts = sample.tally.counts()
    measured = any(set(c) - {UNMEASURED} for c in counts["kept_by_label"].values())
    if not measured and not counts["dropped_skin_tone_by_entry"]:
        return '<p class="note">No kept image yet, or skin tone was not measured (filter off).</p>'
    used = [g for g in (*SKIN_TONES, UNMEASURED) if any(g in c for c in counts["kept_by_entry"].values())]
    parts = [
        "<p>Skin tone is the Individual Typology Angle (ITA) of the skin around the lesion, measured on "
        "every image; groups: very_light &gt; 55° &gt;= light &gt; 41° &gt;= intermediate &gt; 28° &gt;= tan "
        "&gt; 10° &gt;= brown &gt; -30° &gt;= dark.</p>",
        "<h3>kept per label and skin tone</h3><div id='skin-tone-labels'>"
        + _table(
            ["label", *used, "kept"],
            [[k, *[c.get(g, 0) for g in used], sum(c.values())] for k, c in counts["kept_by_label"].items()],
        )
        + "</div>",
        "<h3>kept per entry and skin tone</h3><div id='skin-tone-entries'>"
        + _table(
            ["entry", *used], [[k, *[c.get(g, 0) for g in used]] for k, c in counts["kept_by_entry"].items()]
        )
        + "</div>",
    ]
    drops = counts["dropped_skin_tone_by_entry"]
    if drops:
        parts.append(
            "<h3>dropped for skin tone (measured group)</h3><div id='skin-tone-drops'>"
            + _table(
                ["entry", "dropped", "measured"],
                [
                    [
                        k,
                        n,
                        ", ".join(
                            f"{g} {m}" for g, m in counts["dropped_skin_tone_groups"].get(k, {}).items()
                        ),
                    ]
                    for k, n in drops.items()
                ],
            )
            + "</div>"
        )
    dist = distribution_status(manifest, counts)
    if dist:
        parts.append(
            "<h3>distribution targets</h3><div id='skin-tone-distribution'>"
            + _table(
                ["label", "groups", "min fraction", "kept inside / kept", "fraction", "status"],
                [
                    [
                        d["label"] or "all",
                        "+".join(d["skin_tone"]),
                        f"{d['min_fraction']:g}",
                        f"{d['kept_inside']} / {d['kept']}",
                        f"{d['fraction']:.3f}",
                        "met" if d["met"] else f"SHORTFALL of {d['shortfall']}",
                    ]
                    for d in dist
                ],
            )
            + "</div>"
        )
    # one contact sheet per group: the best-ranked kept images, spread over labels in rank order
    for group in (g for g in used if g != UNMEASURED):  # unmeasured images are on the kept sheet already
        pool = [r for _, r in sorted(sample.pools.get(group, []), key=lambda p: p[0])[: sample.per_group]]
        figs = []
        for r, uri in bounded_map(lambda r: _thumb(store, r), pool, workers):
            if uri is None:
                continue
            figs.append(
                f'<figure class="t" title="{_e(r["sample_id"])}"><img src="{uri}" alt="{_e(r["sample_id"])}">'
                f"<figcaption><span>{_e(r['entry_id'])}</span></figcaption></figure>"
            )
        parts.append(
            f"<h3 id='skin-tone-sheet-{_e(group)}'>{_e(_group_title(group))}: {len(figs)} of "
            f"{sample.pool_sizes.get(group, 0):,d} kept</h3>"
            f'<div class="sheet">{"".join(figs)}</div>'
        )
    return "".join(parts)
