"""The HTML page of `dermgen report`: inline CSS, tables, plots and contact sheets in one file."""

from __future__ import annotations

import html
import logging
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from dermgen import __version__
from dermgen.filters.names import SCORE_NAMES
from dermgen.report_data import RunData, Thumb
from dermgen.report_plots import (
    plot_breakdown,
    plot_entries,
    plot_reasons,
    plot_score,
    plot_throughput,
)
from dermgen.report_review import REVIEW_CSS, review_attrs, review_html

log = logging.getLogger("dermgen.report")


CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d1d1f;background:#f6f7f9}
header{background:#1f2937;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:20px} header .sub{color:#cbd5e1;font-size:13px;margin-top:4px}
nav{background:#fff;border-bottom:1px solid #e5e7eb;padding:8px 28px;position:sticky;top:0;z-index:2}
nav a{margin-right:16px;color:#1565c0;text-decoration:none;font-size:13px}
main{max-width:1280px;margin:0 auto;padding:8px 28px 40px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:16px 20px;margin:18px 0}
h2{font-size:17px;margin:0 0 12px} h3{font-size:14px;margin:16px 0 8px;color:#374151}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
.card{border:1px solid #e5e7eb;border-radius:6px;padding:10px 12px;background:#fafafa}
.card .v{font-size:20px;font-weight:600} .card .k{font-size:12px;color:#6b7280}
.ok{color:#2e7d32} .bad{color:#c62828} .warn{color:#b45309}
table{border-collapse:collapse;font-size:13px;margin:4px 0 8px}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 10px;text-align:right;vertical-align:top}
th{background:#f3f4f6;font-weight:600} td:first-child,th:first-child{text-align:left}
td.l{text-align:left} tr:hover td{background:#f9fafb}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:10px}
img.plot{max-width:100%;height:auto;border:1px solid #eee;border-radius:4px}
.sheet{display:grid;grid-template-columns:repeat(auto-fill,minmax(138px,1fr));gap:8px}
figure.t{margin:0;background:#fafafa;border:1px solid #e5e7eb;border-radius:4px;padding:4px;font-size:11px}
figure.t img{width:128px;height:128px;object-fit:cover;display:block;margin:0 auto;image-rendering:auto}
figure.t figcaption{color:#4b5563;overflow-wrap:anywhere;margin-top:3px}
figure.t .r{color:#c62828;font-weight:600}
.note{color:#6b7280;font-size:13px} code{font-size:12px;background:#f3f4f6;padding:1px 4px;border-radius:3px}
.kv td:first-child{color:#6b7280;white-space:nowrap} .kv td{text-align:left}
footer{color:#9ca3af;font-size:12px;text-align:center;padding:20px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: list[str], rows: list[list[Any]], cls: str = "", left: int = 1) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=l' if i < left else ''}>{_e(c)}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(uri: str | None, alt: str) -> str:
    return f'<img class="plot" src="{uri}" alt="{_e(alt)}">' if uri else ""


def _pct(num: int, den: int) -> str:
    return f"{100 * num / den:.1f}%" if den else "-"


def _count_rows(counts: dict[Any, Counter], keys: list[Any], targets: dict[Any, int] | None) -> list[list]:
    out = []
    for k in keys:
        c = counts.get(k, Counter())
        row = [k]
        if targets is not None:
            row.append(f"{targets.get(k, 0):,d}")
        row += [f"{c['rows']:,d}", f"{c['kept']:,d}", f"{c['dropped']:,d}", f"{c['failed']:,d}"]
        row.append(_pct(c["kept"], c["rows"]))
        if targets is not None:
            row.append(f"{max(0, targets.get(k, 0) - c['kept']):,d}")
        out.append(row)
    return out


def _sheet(thumbs: list[Thumb], dropped: bool) -> str:
    figs = []
    for t in thumbs:
        r = t.row
        scores = ", ".join(f"{k}={v:.3g}" for k, v in (r.get("scores") or {}).items() if v is not None)
        tip = (
            f"{r['sample_id']}\n{r.get('prompt') or ''}\nseed {r.get('seed')}, {r.get('sampler')}, "
            f"{r.get('steps')} steps" + (f"\n{scores}" if scores else "")
        )
        cap = f"<span>{_e(r['sample_id'])}</span>"
        if dropped:
            cap += f'<br><span class="r">{_e(", ".join(r.get("drop_reasons") or []) or "(no reason)")}</span>'
        figs.append(
            f'<figure class="t" title="{_e(tip)}"><img src="{t.uri}" alt="{_e(r["sample_id"])}">'
            f"<figcaption>{cap}</figcaption></figure>"
        )
    return f'<div class="sheet">{"".join(figs)}</div>'


def _provenance(data: RunData) -> str:
    run, stats = data.run, data.stats
    b = run.get("binding") or {}
    env = run.get("environment", {})
    cfg = run.get("config", {})
    manifest = run.get("manifest") or {}
    models = sorted(stats.models, key=str)
    model_txt = "; ".join(f"{m} ({h or '?'}, sha256 {(s or '?')[:16]}…)" for m, h, s in models)
    loras: set[str] = set()
    for lr in b.get("loras") or []:
        loras.add(f"{lr.get('path')} × {lr.get('scale')} (sha256 {str(lr.get('sha256'))[:10]}, all entries)")
    for e in manifest.get("entries", []):
        for lr in e.get("loras") or []:
            loras.add(f"{lr.get('path')} × {lr.get('scale')} (entry {e.get('id')})")
    loras |= stats.loras
    filt = b.get("filter", {})
    devices = stats.devices
    items = [
        ("run id", run.get("run_id")),
        (
            "created / finished",
            f"{run.get('created_at', '?')} / {(data.summary or {}).get('finished_at', '-')}",
        ),
        ("manifest", f"{manifest.get('name', '?')} (sha256 {str(b.get('manifest_sha256', '?'))[:12]})"),
        ("run seed", b.get("run_seed")),
        ("model", model_txt or f"{cfg.get('model') or manifest.get('model')} (no rows yet)"),
        ("model binding", b.get("model")),
        ("LoRAs", "; ".join(sorted(loras)) or "none"),
        (
            "filter",
            f"{filt.get('spec', '?')}"
            + (f", overrides {filt.get('overrides')}" if filt.get("overrides") else "")
            + (f", reference {filt.get('reference_dir')}" if filt.get("reference_dir") else ""),
        ),
        (
            "plan",
            f"limit {b.get('limit')}, size {b.get('size')}, shard size {b.get('shard_size')}, "
            f"block {b.get('block')}, cap factor {b.get('cap_factor')}",
        ),
        (
            "batch / dtype / device",
            f"{cfg.get('batch_size')} / {cfg.get('dtype')} / {cfg.get('device') or 'auto'}",
        ),
        ("devices", ", ".join(f"{d} ×{n}" for d, n in sorted(devices.items(), key=str)) or "-"),
        ("nodes / actors", f"{len(stats.nodes)} / {len(stats.actors)}"),
        ("dermgen", f"{env.get('dermgen_version', '?')}, git {env.get('git_commit') or 'unknown'}"),
        ("python / platform", f"{env.get('python', '?')} / {env.get('platform', '?')}"),
    ]
    kv = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in items)
    libs = env.get("libraries") or {}
    lib_rows = [[k, v or "not installed"] for k, v in sorted(libs.items())]
    return (
        f'<table class="kv" id="provenance-table"><tbody>{kv}</tbody></table>'
        f"<h3>library versions</h3>{_table(['library', 'version'], lib_rows, 'kv', left=2)}"
    )


def render_html(data: RunData) -> str:
    """The whole page as one string."""
    run, stats, summary = data.run, data.stats, data.summary
    rows = stats.rows  # how many rows the run holds (counted, never kept)
    targets_label: dict[str, int] = run.get("targets_by_label") or {}
    targets_entry: dict[str, int] = run.get("targets") or {}
    entry_label = {e["id"]: e.get("label") for e in (run.get("manifest") or {}).get("entries", [])}
    by_label, by_entry = dict(stats.by_label), dict(stats.by_entry)
    by_sampler, by_steps = dict(stats.by_sampler), dict(stats.by_steps)
    kept = sum(c["kept"] for c in by_label.values())
    dropped = sum(c["dropped"] for c in by_label.values())
    failed = sum(c["failed"] for c in by_label.values())
    target = sum(targets_entry.values())
    labels = sorted(set(targets_label) | set(by_label))

    if summary is None:
        status, status_cls = "in progress or interrupted (no summary.json)", "warn"
    elif summary.get("complete"):
        status, status_cls = "complete", "ok"
    else:
        status, status_cls = "finished with a shortfall", "bad"
    elapsed = (summary or {}).get("elapsed_s")
    rate = (summary or {}).get("images_per_s")
    cards = [
        ("kept", f"{kept:,d} / {target:,d}", "ok" if target and kept >= target else ""),
        ("generated", f"{rows:,d}", ""),
        ("dropped", f"{dropped:,d} ({_pct(dropped, rows)})", "bad" if dropped else ""),
        ("failed", f"{failed:,d}", "bad" if failed else ""),
        (
            "shards committed",
            f"{data.shards}" + (f" / {data.shards_planned} planned" if data.shards_planned else ""),
            "",
        ),
        ("elapsed", f"{elapsed / 60:.1f} min" if elapsed else "-", ""),
        ("throughput", f"{rate:.2f} img/s" if rate else "-", ""),
        ("status", status, status_cls),
    ]
    cards_html = "".join(
        f'<div class="card" id="card-{k.replace(" ", "-")}"><div class="k">{_e(k)}</div>'
        f'<div class="v {cls}">{_e(v)}</div></div>'
        for k, v, cls in cards
    )
    empty = '<p class="note">No committed shards yet: nothing to count.</p>'

    # counts
    head = ["", "target", "generated", "kept", "dropped", "failed", "kept %", "shortfall"]
    head_s = ["", "generated", "kept", "dropped", "failed", "kept %"]
    entry_keys = list(entry_label) + sorted((set(targets_entry) | set(by_entry)) - set(entry_label))
    entry_rows = _count_rows(by_entry, entry_keys, targets_entry)
    for r in entry_rows:
        r[0] = f"{r[0]} ({entry_label.get(r[0], '?')})"
    counts_html = (
        (
            f"<h3>per label</h3><div id='counts-label'>{_table(['label'] + head[1:], _count_rows(by_label, labels, targets_label))}</div>"
            f"<h3>per entry</h3><div class='row'><div id='counts-entry'>{_table(['entry'] + head[1:], entry_rows)}</div>"
            f"{_img(plot_entries(by_entry, targets_entry, entry_keys), 'kept vs dropped per entry')}</div>"
            f"<div class='row'><div><h3>per sampler</h3>"
            f"{_table(['sampler'] + head_s[1:], _count_rows(by_sampler, sorted(by_sampler, key=str), None))}"
            f"{_img(plot_breakdown('per sampler', by_sampler), 'per sampler')}</div>"
            f"<div><h3>per steps</h3>"
            f"{_table(['steps'] + head_s[1:], _count_rows(by_steps, sorted(by_steps, key=str), None))}"
            f"{_img(plot_breakdown('per steps', by_steps), 'per steps')}</div></div>"
        )
        if rows
        else empty
    )

    # drop reasons
    reasons: dict[str, Counter] = dict(stats.reasons)
    if reasons:
        reason_rows = [
            [reason, f"{sum(c.values()):,d}"]
            + [f"{c[label]:,d}" for label in labels]
            + [_pct(sum(c.values()), dropped + failed)]
            for reason, c in sorted(reasons.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
        ]
        drops_html = (
            f"<p>{kept:,d} kept, {dropped:,d} dropped, {failed:,d} failed of {rows:,d} generated.</p>"
            f"<div class='row'><div id='reasons-table'>"
            f"{_table(['reason', 'images'] + labels + ['% of dropped'], reason_rows)}</div>"
            f"{_img(plot_reasons(reasons, labels), 'drop reasons')}</div>"
        )
    elif rows:
        drops_html = f"<p>No image was dropped: all {kept:,d} generated images were kept.</p>"
    else:
        drops_html = empty
    entry_drop = ((run.get("binding") or {}).get("filter") or {}).get("spec")
    if entry_drop == "none":
        drops_html += '<p class="note">The filter was off for this run (<code>--filter none</code>).</p>'

    # scores
    plots = []
    for name in SCORE_NAMES:
        if name in stats.scores:
            k_vals, d_vals = stats.scores[name]
            plots.append(f"<div>{_img(plot_score(name, k_vals, d_vals), f'score {name}')}</div>")
    scores_html = (
        f'<div class="plots">{"".join(plots)}</div>'
        if plots
        else '<p class="note">No scores recorded (the filter was off, or nothing was scored yet).</p>'
    )

    # throughput
    timeline = (summary or {}).get("timeline") or []
    created = stats.created
    tp = plot_throughput(timeline, created)
    tp_html = _img(tp, "throughput") if tp else '<p class="note">No timing data yet.</p>'
    if created.n:
        first = datetime.fromtimestamp(created.lo, timezone.utc)
        last = datetime.fromtimestamp(created.hi, timezone.utc)
        span = created.hi - created.lo
        tp_html += (
            f'<p class="note">rows created between {first:%Y-%m-%d %H:%M:%S} and '
            f"{last:%H:%M:%S} UTC ({span / 60:.1f} min)"
            + (f"; {rows / span:.2f} img/s" if span > 0 else "")
            + "</p>"
        )

    # contact sheets
    def sheet_note(thumbs: list[Thumb], pool: int, what: str) -> str:
        shown = Counter(t.row["label"] for t in thumbs)
        kept_side = what == "kept"
        per_label = [
            f"{shown[label]:,d} of {n:,d} {label}"
            for (k, label), n in sorted(data.sheet_pools.items())
            if k == kept_side and len(data.sheet_pools) > 1
        ]
        return (
            f'<p class="note">{len(thumbs)} of {pool:,d} {what} images, a fixed sample (same run, same images)'
            + (f": {', '.join(per_label)}" if len(per_label) > 1 else "")
            + ".</p>"
        )

    kept_html = (
        sheet_note(data.kept_sheet, kept, "kept") + _sheet(data.kept_sheet, False)
        if data.kept_sheet
        else '<p class="note">No kept images.</p>'
    )
    dropped_html = (
        sheet_note(data.dropped_sheet, dropped, "dropped") + _sheet(data.dropped_sheet, True)
        if data.dropped_sheet
        else '<p class="note">No dropped images to show.</p>'
    )
    if data.dropped_unsaved:
        dropped_html += (
            f'<p class="note">{data.dropped_unsaved:,d} dropped image(s) were not saved '
            "(<code>--no-save-dropped</code>).</p>"
        )
    unread = '<p class="note bad">{} sampled image(s) could not be read (see the log).</p>'
    if data.unreadable.get("kept"):
        kept_html += unread.format(data.unreadable["kept"])
    if data.unreadable.get("dropped"):
        dropped_html += unread.format(data.unreadable["dropped"])

    review_content, review_script = review_html(data)
    sections = [
        ("overview", "Overview", f'<div class="cards">{cards_html}</div>'),
        ("counts", "Counts", counts_html),
        ("drops", "Kept vs dropped", drops_html),
        ("scores", "Filter scores", scores_html),
        ("throughput", "Throughput", tp_html),
        ("kept-images", "Kept images", kept_html),
        ("dropped-images", "Dropped images", dropped_html),
        ("review", "Review", review_content),
        ("skin-tone", "Skin tone", data.skin_tone_html or '<p class="note">Skin tone not measured.</p>'),
        ("provenance", "Provenance", _provenance(data)),
    ]
    nav = "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title, _ in sections)
    body = "".join(
        f'<section id="{sid}"{review_attrs(data) if sid == "review" else ""}><h2>{_e(t)}</h2>{content}</section>'
        for sid, t, content in sections
    )
    title = f"dermgen run {run.get('run_id', '?')}"
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{_e(title)}</title><style>{CSS}{REVIEW_CSS}</style></head><body>'
        f"<header><h1>{_e(title)}</h1><div class='sub'>{_e(data.uri)} · manifest "
        f"{_e((run.get('manifest') or {}).get('name', '?'))} · {_e(status)}</div></header>"
        f"<nav>{nav}</nav><main>{body}</main>"
        f"<footer>made by dermgen {_e(__version__)} on {now}</footer>"
        + (f"<script>{review_script}</script>" if review_script else "")
        + "</body></html>"
    )
