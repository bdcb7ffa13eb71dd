"""A manifest written as JSON (a subset of YAML) loads through the json module, to the same Manifest."""

import json

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


def test_json_with_a_repeated_key_is_left_to_the_yaml_loader(tmp_path, monkeypatch):
    """The YAML loader owns the rules for repeated keys; the JSON route steps aside for such a file."""
    import dermgen.manifest as manifest_mod

    text = (
        '{"name": "a", "name": "b", "entries": [{"id": "e", "label": "benign", "prompt": "p", "count": 1}]}'
    )
    path = tmp_path / "dup.json"
    path.write_text(text)
    assert manifest_mod._json_document(text) is None
    calls = []
    real = manifest_mod.yaml.load
    monkeypatch.setattr(manifest_mod.yaml, "load", lambda *a, **k: calls.append(1) or real(*a, **k))
    try:  # whatever the YAML loader decides about the repeated key (accept or refuse), it decided it
        load_manifest(path)
    except ConfigError:
        pass
    assert calls
