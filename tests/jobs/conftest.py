"""Disjoint splits of the shared samples for classifier tests: real train, a packed "synthetic" run, test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sample_splits(samples_dir, tmp_path_factory) -> dict[str, Path]:
    """real/ (25+25), test/ (20+20) folders and syn (15+15 packed as a run), disjoint, seeded."""
    from dermgen.data.pack import pack_folder
    from dermgen.data.real import split_folder

    root = tmp_path_factory.mktemp("splits")
    split_folder(samples_dir, root, {"real": 50, "test": 40, "syn_src": 30}, seed=0)
    pack_folder(root / "syn_src", root / "syn", shard_size=8)
    return {"real": root / "real", "test": root / "test", "syn": root / "syn"}
