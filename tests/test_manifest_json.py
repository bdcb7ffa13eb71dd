"""A manifest written as JSON (a subset of YAML) loads through the json module, to the same Manifest."""

import json

import pytest
import yaml

from dermgen.config import REPO_ROOT
from dermgen.errors import ConfigError
from dermgen.manifest import load_manifest, manifest_hash


def test_a_json_manifest_equals_its_yaml_form(tmp_path):
    src = REPO_ROOT / "manifests" / "smart_transformations.yaml"
    path = tmp_path / "m.json"
    path.write_text("\n  " + json.dumps(yaml.safe_load(src.read_text()), indent=2))
    a, b = load_manifest(src), load_manifest(path)
    assert a == b and manifest_hash(a) == manifest_hash(b)


def test_json_with_a_repeated_key_is_left_to_the_yaml_loader(tmp_path):
    """The YAML loader owns the rules for repeated keys: the JSON route steps aside, and the key is refused."""
    import dermgen.manifest as manifest_mod

    text = (
        '{"name": "a", "name": "b", "entries": [{"id": "e", "label": "benign", "prompt": "p", "count": 1}]}'
    )
    path = tmp_path / "dup.json"
    path.write_text(text)
    assert manifest_mod._json_document(text) is None
    with pytest.raises(ConfigError, match="duplicate key 'name' at line 1"):
        load_manifest(path)


def test_relative_lora_paths_in_json_are_beside_the_manifest_as_in_yaml(tmp_path):
    doc = {
        "name": "m",
        "entries": [
            {"id": "e", "label": "benign", "prompt": "p", "count": 1, "loras": [{"path": "ad/a.safetensors"}]}
        ],
    }
    (tmp_path / "m.json").write_text(json.dumps(doc))
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    a, b = load_manifest(tmp_path / "m.json"), load_manifest(tmp_path / "m.yaml")
    assert a.entries[0].loras[0].path == str((tmp_path / "ad" / "a.safetensors").resolve())
    assert a == b
