"""Live progress: images/s, kept rate per label, ETA and actor health.

On a terminal it redraws one status line; elsewhere (ray job logs, CI) it logs a summary line every
`interval` seconds.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("dermgen.progress")


def _fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


MAX_TIMELINE_POINTS = 1024


class Progress:
    def __init__(self, total_target: int, interval: float = 10.0, stream=None) -> None:
        self.total_target = total_target
        self.interval = interval
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.time()
        self.last = 0.0
        self.images = 0
        self.kept: dict[str, int] = {}
        self.generated: dict[str, int] = {}
        self.timeline: list[tuple[float, int]] = []  # (seconds since start, images) for the report
        self._timeline_stride = 1  # record every n-th update; doubles when the timeline is full
        self._updates = 0

    def update(self, summary: dict[str, Any]) -> None:
        self.images += summary["planned"]
        label = summary["label"]
        self.kept[label] = self.kept.get(label, 0) + summary["kept"]
        self.generated[label] = self.generated.get(label, 0) + summary["planned"]
        self._updates += 1
        if self._updates % self._timeline_stride == 0:
            self.timeline.append((round(time.time() - self.t0, 3), self.images))
            if len(self.timeline) >= MAX_TIMELINE_POINTS:  # bounded however long the run: thin out evenly
                self.timeline = self.timeline[1::2]
                self._timeline_stride *= 2

    def line(self, remaining: int, actors: dict[str, str]) -> str:
        elapsed = max(time.time() - self.t0, 1e-9)
        rate = self.images / elapsed
        eta = remaining / rate if rate > 0 else float("inf")
        kept = " ".join(
            f"{lbl}={self.kept[lbl]}/{self.generated[lbl]}({100 * self.kept[lbl] / max(1, self.generated[lbl]):.0f}%)"
            for lbl in sorted(self.kept)
        )
        health: dict[str, int] = {}
        for state in actors.values():
            health[state] = health.get(state, 0) + 1
        actors_txt = ",".join(f"{v} {k}" for k, v in sorted(health.items()))
        return (
            f"{self.images} images, {rate:.2f} img/s, kept {kept or '-'}, ~{remaining} left, "
            f"ETA {_fmt_eta(eta)}, actors: {actors_txt or '-'}"
        )

    def tick(self, remaining: int, actors: dict[str, str], force: bool = False) -> None:
        now = time.time()
        if self.tty:
            self.stream.write("\r\033[K" + self.line(remaining, actors))
            self.stream.flush()
        elif force or now - self.last >= self.interval:
            log.info(self.line(remaining, actors))
            self.last = now

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def stats(self) -> dict[str, Any]:
        elapsed = time.time() - self.t0
        return {
            "elapsed_s": round(elapsed, 3),
            "images": self.images,
            "images_per_s": round(self.images / elapsed, 4) if elapsed > 0 else None,
            "timeline": self.timeline
            + (
                []
                if self.timeline and self.timeline[-1][1] == self.images
                else [(round(elapsed, 3), self.images)]
            ),
        }
