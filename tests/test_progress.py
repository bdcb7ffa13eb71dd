"""Live progress: one redrawn line on a terminal, periodic log lines elsewhere, correct rates and ETA."""

from __future__ import annotations

import io
import logging
import types

import pytest

import dermgen.progress as progress_mod
from dermgen.progress import Progress, _fmt_eta


class Clock:
    """A fake `time` module for dermgen.progress: time only moves when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(progress_mod, "time", types.SimpleNamespace(time=c.time))
    return c


def feed(p: Progress, clock: Clock, summaries: list[tuple[float, str, int, int]]) -> None:
    """(seconds after start, label, planned, kept) per finished shard."""
    for t, label, planned, kept in summaries:
        clock.now = 1000.0 + t
        p.update({"label": label, "planned": planned, "kept": kept, "shard_id": f"{label}-{t}"})


def test_kept_rate_per_label_rate_and_eta(clock):
    p = Progress(total_target=100, stream=io.StringIO())
    feed(p, clock, [(10, "benign", 10, 8), (20, "malignant", 10, 5), (30, "benign", 10, 6)])
    clock.now = 1030.0  # 30 images in 30 s -> 1 img/s
    line = p.line(remaining=90, actors={"a": "ready", "b": "ready", "c": "starting"})
    assert line.startswith("30 images, 1.00 img/s")
    assert "benign=14/20(70%)" in line and "malignant=5/10(50%)" in line
    assert line.index("benign=") < line.index("malignant=")
    assert "~90 left" in line
    assert "ETA 1m30s" in line  # 90 remaining at 1 img/s
    assert "actors: 2 ready,1 starting" in line


def test_eta_hours_and_unknown(clock):
    p = Progress(total_target=10, stream=io.StringIO())
    assert "ETA ?" in p.line(remaining=10, actors={})  # nothing done yet: no rate, no ETA
    assert "kept -" in p.line(remaining=10, actors={}) and "actors: -" in p.line(10, {})
    feed(p, clock, [(4, "benign", 2, 2)])  # 0.5 img/s
    assert "ETA 2h00m" in p.line(remaining=3600, actors={})
    assert _fmt_eta(float("inf")) == "?" and _fmt_eta(float("nan")) == "?"
    assert _fmt_eta(59.9) == "0m59s" and _fmt_eta(3661) == "1h01m"


def test_tty_redraws_one_line(clock):
    stream = TTY()
    p = Progress(total_target=20, stream=stream)
    assert p.tty
    for t in (1, 2, 3):
        feed(p, clock, [(t, "benign", 2, 1)])
        p.tick(remaining=20 - 2 * t, actors={"a": "ready"})
    out = stream.getvalue()
    assert out.count("\r\033[K") == 3  # each tick clears and rewrites the same line
    assert "\n" not in out
    assert out.rsplit("\r\033[K", 1)[1].startswith("6 images")
    p.close()
    assert stream.getvalue().endswith("\n") and stream.getvalue().count("\n") == 1


def test_non_tty_logs_periodic_summaries(clock, caplog):
    stream = io.StringIO()
    p = Progress(total_target=20, interval=10.0, stream=stream)
    assert not p.tty
    with caplog.at_level(logging.INFO, logger="dermgen.progress"):
        feed(p, clock, [(1, "benign", 2, 2)])
        p.tick(remaining=18, actors={"a": "ready"})  # first tick logs
        feed(p, clock, [(5, "malignant", 2, 1)])
        p.tick(remaining=16, actors={"a": "ready"})  # 4 s later: within the interval, silent
        feed(p, clock, [(12, "benign", 2, 2)])
        p.tick(remaining=14, actors={"a": "ready"})  # 11 s after the last line: logs
        clock.now = 1013.0
        p.tick(remaining=14, actors={"a": "ready"}, force=True)  # forced (end of run): logs
        p.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "dermgen.progress"]
    assert len(lines) == 3
    assert lines[0].startswith("2 images") and lines[1].startswith("6 images")
    assert "malignant=1/2(50%)" in lines[1] and "benign=4/4(100%)" in lines[1]
    assert stream.getvalue() == ""  # nothing drawn on a non-terminal stream


def test_stats_timeline(clock):
    p = Progress(total_target=8, stream=io.StringIO())
    feed(p, clock, [(2, "benign", 4, 4), (4.5, "malignant", 4, 3)])
    stats = p.stats()
    assert stats["timeline"] == [(2.0, 4), (4.5, 8)]
    assert stats["images"] == 8
    assert stats["elapsed_s"] == 4.5
    assert stats["images_per_s"] == pytest.approx(8 / 4.5, rel=1e-3)


def test_timeline_stays_bounded_and_ends_at_the_last_update():
    p = Progress(10**9, stream=io.StringIO())
    for _ in range(10 * progress_mod.MAX_TIMELINE_POINTS + 3):
        p.update({"planned": 64, "label": "benign", "kept": 60})
    timeline = p.stats()["timeline"]
    assert progress_mod.MAX_TIMELINE_POINTS // 2 <= len(timeline) <= progress_mod.MAX_TIMELINE_POINTS + 1
    images = [n for _, n in timeline]
    assert images == sorted(images) and images[-1] == p.images == 64 * (
        10 * progress_mod.MAX_TIMELINE_POINTS + 3
    )
    steps = {b - a for a, b in zip(images[:-2], images[1:-1], strict=True)}
    assert len(steps) == 1  # evenly thinned
