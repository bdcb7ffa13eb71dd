"""Off-domain: frames that are not a dermoscopic skin close-up at all."""

from __future__ import annotations

import cv2
import numpy as np

from dermgen.filters.base import ImageView, Scorer
from dermgen.filters.hair import hair_mask

__all__ = ["OffDomainScorer", "off_domain_parts"]

# Ramps (value at which the part starts to count, value at which it is certain); each lower end sits
# above the largest value seen on the 120 kept samples, see docs/FILTERS.md.
FLAT_RAMP = (0.05, 0.02)  # luminance p99 - p1: kept samples >= 0.35; blank frames < 0.015
COLOUR_RAMP = (0.6, 0.9)  # fraction of pixels outside the skin/lesion gamut: kept <= 0.55
NOISE_RAMP = (10.0, 14.0)  # mean high-pass |a*| + |b*| (colour speckle): kept <= 4, dense hair <= 10
SCALP_RAMP = (0.3, 0.45)  # hair mask fraction (128 px): kept <= 0.11, heavy hair <= 0.30, dense scalp >= 0.45


def _ramp(value: float, start: float, full: float) -> float:
    return float(np.clip((value - start) / (full - start), 0.0, 1.0))


def off_domain_parts(view: ImageView) -> dict[str, float]:
    """The four 0..1 parts whose maximum is ``off_domain``: flat, colour, noise, scalp."""
    lab = view.analysis_lab
    lum, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    lo, hi = np.percentile(lum, (1, 99))
    # skin, lesions (brown, black, red, blue-grey) and lavender/pink lighting fall inside this gamut;
    # green, saturated blue, saturated yellow and neon magenta do not
    outside = (a < -6) | (b < -32) | (b > 45) | (a > 60) | ((a < 5) & (b > 20))
    speckle = np.abs(a - cv2.GaussianBlur(a, (0, 0), 1.5)) + np.abs(b - cv2.GaussianBlur(b, (0, 0), 1.5))
    return {
        "flat": _ramp((hi - lo) / 255.0, *FLAT_RAMP),
        "colour": _ramp(float(outside.mean()), *COLOUR_RAMP),
        "noise": _ramp(float(speckle.mean()), *NOISE_RAMP),
        "scalp": _ramp(float(hair_mask(view).mean()), *SCALP_RAMP),
    }


class OffDomainScorer(Scorer):
    """Not a dermoscopic skin close-up, 0..1 (1 = certainly not): the maximum of four parts.

    - flat: a blank frame (black, white, grey, one colour): no luminance range at all;
    - colour: most pixels outside the colours of skin, lesions and dermoscope lighting (landscapes,
      green/blue gradients, colourful patterns);
    - noise: colour speckle everywhere (random noise, fine checkerboards);
    - scalp: the frame is covered with hair (a hair-covered scalp photo rather than a lesion).

    Each part is a linear ramp between a value just above what kept samples show and a value typical
    of the off-domain frame. Kept samples score 0. Geometric patterns with straight edges are left to
    the ruler score.
    """

    names = ("off_domain",)

    def compute(self, view: ImageView) -> dict[str, float]:
        return {"off_domain": max(off_domain_parts(view).values())}
