"""The LoRA card names its training folder as a memorisation reference set (path + content hash)."""

from __future__ import annotations

import shutil
from pathlib import Path

from dermgen.filters.reference_index import load_reference_index
from dermgen.preprocess import list_sources
from dermgen.train.lora_card import data_fingerprint, memorisation_reference

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "memorisation"


def test_card_data_names_the_reference_set(tmp_path, monkeypatch):
    monkeypatch.setenv("DERMGEN_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    for label in ("benign", "malignant"):
        (data / label).mkdir(parents=True)
        for f in sorted(ASSETS.glob(f"{label}-*.png"))[:2]:
            shutil.copy(f, data / label / f.name)
    fp = data_fingerprint(list_sources(data), str(data))
    ref = fp["reference"]
    assert ref["path"] == str(data.resolve())
    assert ref["sha256"] == load_reference_index(data).sha256  # the key of its cached index
    assert memorisation_reference("s3://bucket/isic") is None
    assert memorisation_reference(str(tmp_path / "missing")) is None
