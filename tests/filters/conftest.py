"""Fixtures for the filter tests: the kept Derm-T2IM samples (skipped cleanly when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dermgen.filters.dedup import read_rgb

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared/data/derm-t2im-samples"


def _require_samples() -> Path:
    if not (SAMPLES / "benign").is_dir() or not (SAMPLES / "malignant").is_dir():
        pytest.skip(f"kept samples not found at {SAMPLES}")
    return SAMPLES


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return _require_samples()


@pytest.fixture(scope="session")
def split(samples_dir):
    """(calibration, test) lists of Sample."""
    from dermgen.filters.evaluation import load_samples

    return load_samples(samples_dir)


@pytest.fixture(scope="session")
def small_image(samples_dir) -> np.ndarray:
    """A benign sample with a small centred mole on plain skin."""
    return read_rgb(samples_dir / "benign" / "00000-1589873476.png")


@pytest.fixture(scope="session")
def large_image(samples_dir) -> np.ndarray:
    """A malignant sample with a large lesion."""
    return read_rgb(samples_dir / "malignant" / "00097-2668743799.png")


@pytest.fixture(scope="session")
def heldout(split):
    """The default filter measured on the held-out split (shared by the rate tests)."""
    from dermgen.filters.evaluation import evaluate_split

    return evaluate_split(split[1], mild_every=2)
