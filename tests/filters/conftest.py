"""Fixtures for the filter tests: the kept Derm-T2IM samples (``samples_dir`` comes from tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dermgen.filters.dedup import read_rgb


@pytest.fixture(scope="session")
def split(samples_dir):
    """(calibration, test) lists of Sample."""
    from filterlab.evaluation import load_samples

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
    from filterlab.evaluation import evaluate_split

    return evaluate_split(split[1], mild_every=2)
