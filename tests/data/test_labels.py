"""Label mapping shared by runs and folders."""

from __future__ import annotations

import pytest

from dermgen.data.labels import LabelMap, as_label_map
from dermgen.errors import ConfigError


def test_default_is_benign_0_malignant_1_case_insensitive():
    lm = LabelMap()
    assert lm.id("benign") == 0 and lm.id("Malignant") == 1 and lm.id(" BENIGN ") == 0
    assert lm.names == ["benign", "malignant"] and lm.num_classes == 2
    with pytest.raises(ConfigError, match="'melanoma' maps to no class"):
        lm.id("melanoma")


def test_aliases_cover_common_names_and_ham10000_codes():
    lm = LabelMap.with_aliases()
    assert [lm.id(n) for n in ("nevus", "Melanoma", "nv", "mel", "bcc", "bkl")] == [0, 1, 0, 1, 1, 0]


def test_custom_maps_are_validated():
    assert as_label_map({"a": 1, "b": 0}).name(0) == "b"
    with pytest.raises(ConfigError, match="label_map"):
        as_label_map({"a": 0, "b": 2})
    with pytest.raises(ValueError, match="names no class"):
        LabelMap(aliases={"x": "nothing"})
