"""Skin-tone groups of the Individual Typology Angle (ITA), and the per-run counts built on them.

The one owner of the group names and bounds (light: no image libraries; the manifest, the worker, the
summary, the report and the dataset card use it; the scorer is :mod:`dermgen.filters.skintone`).
ITA = atan((L* - 50) / b*) in degrees; groups (Chardon et al. 1991; Del Bino and Bernerd 2013):

    very_light > 55 >= light > 41 >= intermediate > 28 >= tan > 10 >= brown > -30 >= dark

A value exactly on a boundary belongs to the darker group (ITA 55 is ``light``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "SKIN_TONES",
    "SKIN_TONE_BOUNDS",
    "SKIN_TONE_REASON",
    "ita_degrees",
    "skin_tone_of",
    "skin_tone_reasons",
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
