"""The plots of `dermgen report` as PNG data URIs (matplotlib object API: no pyplot, no global backend)."""

from __future__ import annotations

import base64
import io
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from dermgen.errors import missing_dependency

if TYPE_CHECKING:
    from dermgen.report_data import Series

log = logging.getLogger("dermgen.report")

MAX_REASON_BARS = 20
COLOURS = {"kept": "#2e7d32", "dropped": "#c62828", "failed": "#757575", "target": "#111111"}


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise missing_dependency("matplotlib", "report") from None
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _integer_axis(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _png_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def plot_entries(counts: dict[str, Counter], targets: dict[str, int], order: list[str]) -> str | None:
    """Horizontal stacked bars of kept / dropped / failed per entry (in `order`), kept target marked."""
    if not counts:
        return None
    names = [n for n in order if n in counts][::-1]  # barh draws bottom-up: first entry on top
    fig = _figure(8.5, 0.45 * len(names) + 1.2)
    ax = fig.add_subplot()
    left = [0] * len(names)
    for part in ("kept", "dropped", "failed"):
        vals = [counts[n][part] for n in names]
        ax.barh(names, vals, left=left, color=COLOURS[part], label=part)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    tx = [targets.get(n, 0) for n in names]
    ax.scatter(tx, names, marker="|", s=300, color=COLOURS["target"], label="kept target", zorder=3)
    ax.set_xlabel("images")
    _integer_axis(ax.xaxis)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title("kept vs dropped per entry")
    return _png_uri(fig)


def plot_reasons(reasons: dict[str, Counter], labels: list[str]) -> str | None:
    """Horizontal bars of drop reasons (most frequent on top), stacked per label."""
    if not reasons:
        return None
    top = sorted(reasons, key=lambda r: (-sum(reasons[r].values()), r))[:MAX_REASON_BARS][::-1]
    fig = _figure(8, 0.4 * len(top) + 1.2)
    ax = fig.add_subplot()
    left = [0] * len(top)
    palette = ["#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#9e9d24"]
    for i, label in enumerate(labels):
        vals = [reasons[r][label] for r in top]
        ax.barh(top, vals, left=left, color=palette[i % len(palette)], label=label)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_xlabel("dropped images (an image may have several reasons)")
    _integer_axis(ax.xaxis)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title("drop reasons")
    return _png_uri(fig)


def plot_breakdown(title: str, counts: dict[Any, Counter]) -> str | None:
    """Vertical stacked kept/dropped/failed bars for a small categorical (sampler, steps)."""
    if not counts:
        return None
    keys = sorted(counts, key=lambda k: (str(type(k)), k))
    fig = _figure(4.8, 2.8)
    ax = fig.add_subplot()
    pos = list(range(len(keys)))  # positions, not strings: step counts would look like numbers
    bottom = [0] * len(keys)
    for part in ("kept", "dropped", "failed"):
        vals = [counts[k][part] for k in keys]
        ax.bar(pos, vals, bottom=bottom, color=COLOURS[part], label=part)
        bottom = [a + b for a, b in zip(bottom, vals, strict=True)]
    ax.set_xticks(pos, [str(k) for k in keys])
    ax.set_title(title)
    ax.set_ylabel("images")
    _integer_axis(ax.yaxis)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
    return _png_uri(fig)


def plot_score(name: str, kept: Series, dropped: Series) -> str:
    """Overlaid histograms of one score for kept and dropped images, on shared bins. A series sampled
    beyond its cap (`Series`) is drawn with weights, so the bars still count images."""
    import numpy as np

    values = np.concatenate([np.asarray(kept.values, dtype=float), np.asarray(dropped.values, dtype=float)])
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 31)
    fig = _figure(3.6, 2.5)
    ax = fig.add_subplot()
    for series, part in ((kept, "kept"), (dropped, "dropped")):
        if series.n:
            vals = np.asarray(series.values, dtype=float)
            weights = np.full(len(vals), series.weight) if series.weight != 1.0 else None
            ax.hist(
                vals, bins=bins, weights=weights, color=COLOURS[part], alpha=0.6, label=f"{part} ({series.n})"
            )
    ax.set_title(name)
    ax.set_ylabel("images")
    _integer_axis(ax.yaxis)
    ax.legend(fontsize=7)
    return _png_uri(fig)


def plot_throughput(timeline: list[list[float]], created: Series) -> str | None:
    """Cumulative images over time (progress timeline and row timestamps, seconds since the epoch) and
    images per minute; a sampled series (`Series`) is drawn with weights."""
    if not timeline and not created.n:
        return None
    fig = _figure(9, 3.0)
    ax, ax2 = fig.subplots(1, 2)
    if timeline:
        xs = [0.0] + [float(t) / 60 for t, _ in timeline]
        ys = [0] + [int(n) for _, n in timeline]
        ax.step(xs, ys, where="post", color="#1565c0", label="progress (summary.json, last session)")
    if created.n:
        ts = sorted(created.values)
        t0, w = created.lo, created.weight
        mins = [(t - t0) / 60 for t in ts]
        ax.step(
            mins,
            [w * (i + 1) for i in range(len(mins))],
            where="post",
            color="#ef6c00",
            label="rows by created_at",
        )
        span = max(mins[-1], 1e-6)
        n_bins = max(1, min(40, created.n // 4))
        ax2.hist(
            mins, bins=n_bins, color="#ef6c00", edgecolor="white", weights=[w * n_bins / span] * len(mins)
        )
        ax2.set_title("images per minute (created_at)")
        ax2.set_xlabel("minutes since first row")
    else:
        ax2.set_axis_off()
    ax.set_title("images over time")
    ax.set_xlabel("minutes")
    ax.set_ylabel("images")
    _integer_axis(ax.yaxis)
    ax.legend(fontsize=7)
    return _png_uri(fig)
