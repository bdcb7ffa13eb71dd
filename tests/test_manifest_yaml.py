"""The direct YAML route (documents without anchors, built straight from libyaml's nodes) gives exactly what
the strict safe loader gives, and leaves everything unusual to it: merge keys, repeated keys, tags, aliases."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dermgen import manifest as M
from dermgen.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
needs_libyaml = pytest.mark.skipif(M._SAFE_LOADER is yaml.SafeLoader, reason="PyYAML without libyaml")

DOCS = [
    "a: 1\nb: [0, 7, -3, +4, 0x1f, 0o17, 017, 1_000, '12', \"13\", 1:30]\n",
    "f: [1.5, -.inf, .nan, 1e3, 6.02e+23, '1.5']\nb: [true, False, yes, no, on, off, '~']\nn: [~, null, ]\n",
    "t: 2001-12-14\nu: 2001-12-14t21:59:43.10-05:00\nbin: !!binary aGVsbG8=\n",
    "x: !!str 3\ny: !!int '4'\nz: !!float '1'\n",
    "k:\n  - {id: x, size: 512x640, steps: 20-26, tags: [a, b]}\n  - [1, [2, [3]]]\n'=': v\n",
    "prompt: >\n  folded\n  text\nlit: |\n  line\n  two\nq: 'it''s'\nd: \"tab\\there\"\n",
    "\u00e9: caf\u00e9\n'&': 'A & B'\nx: a&b\n",
    "---\na: ! 3\nb: !!null ''\nc: [[[[[]]]], {}]\n...\n",
    "---\n",
    "",
    "# only a comment\n",
    "- a\n- b\n",
    "plain\n",
]
UNUSUAL = [  # valid, but the direct route steps aside
    "s: !!set {a, b}\no: !!omap [a: 1, b: 2]\np: !!pairs [a: 1, a: 2]\n",
    "m:\n  <<: {x: 1}\n  y: 2\n",  # merge key without an anchor
    "m:\n  <<: {x: 1}\n  x: 2\n",
    "=: 1\n",
    "--- !!map\na: 1\n",
]
FAILS = [
    "a: 1\na: 2\n",  # repeated key
    "a: {x: 1, x: 2}\n",
    "base: &b {x: 1}\nm:\n  <<: *b\n  y: 2\n",  # merge key (with an anchor)
    "? [a, b]\n: 1\n",  # unhashable key
    "a: !!python/object:os.system x\n",
    "a: *nothing\n",
    "a: [1, 2\n",
    "a: 1\n---\nb: 2\n",
    "1: a\ntrue: b\n",  # equal keys
    "a: !custom x\n",
]


def _full(text: str):
    """What the strict loaders alone make of `text`: libyaml's, then the pure-Python one on a YAML error."""
    try:
        try:
            return ("ok", M._load_yaml_with(M._FastManifestLoader, text, "m.yaml"))
        except yaml.YAMLError:
            return ("ok", M._load_yaml_with(M._ManifestLoader, text, "m.yaml"))
    except (yaml.YAMLError, ConfigError) as exc:
        return (type(exc).__name__, str(exc))


def _fast(text: str):
    try:
        return ("ok", M._load_yaml(text, "m.yaml"))
    except (yaml.YAMLError, ConfigError) as exc:
        return (type(exc).__name__, str(exc))


@needs_libyaml
@pytest.mark.parametrize("text", DOCS + UNUSUAL + FAILS)
def test_direct_route_equals_the_full_loader(text):
    assert _fast(text) == _full(text)


@needs_libyaml
@pytest.mark.parametrize("text", DOCS)
def test_documents_without_anchors_take_the_direct_route(text):
    assert M._load_tree(text) == _full(text)[1]


@needs_libyaml
@pytest.mark.parametrize("text", UNUSUAL + FAILS)
def test_what_only_the_full_loader_handles_is_left_to_it(text):
    with pytest.raises(Exception):  # noqa: B017 -- _Unusual, a YAML error or a ConfigError: all send it back
        M._load_tree(text)


@needs_libyaml
def test_shipped_manifests_load_the_same_either_way():
    for path in sorted((REPO / "manifests").glob("*.yaml")):
        text = path.read_text()
        assert M._load_yaml(text, path.name) == _full(text)[1], path.name


def test_values_keep_their_types():
    data = M._load_yaml("count: 3\nsize: '512'\nflag: true\nscale: 0.5\nnone: null\n", "m.yaml")
    assert data == {"count": 3, "size": "512", "flag": True, "scale": 0.5, "none": None}
    assert [type(v) for v in data.values()] == [int, str, bool, float, type(None)]
