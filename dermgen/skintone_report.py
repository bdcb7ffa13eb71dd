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
from collections.abc import Mapping
from typing import Any

from dermgen.shards import image_key
from dermgen.skintone import (
    SKIN_TONE_BOUNDS,
    SKIN_TONES,
    UNMEASURED,
    distribution_status,
    tone_counts,
    tone_of_row,
)

__all__ = ["PER_GROUP", "skin_tone_html"]

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


def skin_tone_html(
    store: Any, rows: list[dict[str, Any]], manifest: Mapping[str, Any], per_group: int = PER_GROUP
) -> str:
    """The section's HTML; ``rows`` need sample_id, attempt_id, entry_id, label, status, kept, drop_reasons
    and skin_tone or scores (rows of runs made before skin tone was measured show as unmeasured)."""
    counts = tone_counts(rows)
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
    pools: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("status") == "ok" and r.get("kept") and r.get("attempt_id"):
            pools[tone_of_row(r)].append(r)
    for group in (g for g in used if g != UNMEASURED):  # unmeasured images are on the kept sheet already
        pool = sorted(pools.get(group, []), key=lambda r: hashlib.sha256(r["sample_id"].encode()).hexdigest())
        figs = []
        for r in pool[:per_group]:
            uri = _thumb(store, r)
            if uri is None:
                continue
            figs.append(
                f'<figure class="t" title="{_e(r["sample_id"])}"><img src="{uri}" alt="{_e(r["sample_id"])}">'
                f"<figcaption><span>{_e(r['entry_id'])}</span></figcaption></figure>"
            )
        parts.append(
            f"<h3 id='skin-tone-sheet-{_e(group)}'>{_e(_group_title(group))}: {len(figs)} of {len(pool)} kept</h3>"
            f'<div class="sheet">{"".join(figs)}</div>'
        )
    return "".join(parts)
