"""Prompt manifests: YAML files of entries (label, prompt, count, samplers, steps, CFG, size, LoRAs, tags).

Validated by pydantic at the edge; every error names the field, the value and what was expected.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dermgen.errors import ConfigError
from dermgen.samplers import SAMPLER_NAMES
from dermgen.skintone import SKIN_TONES

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MIN_SIZE, MAX_SIZE = 64, 2048
MAX_STEPS = 150
# Aliases may not blow a document up ("billion laughs"): expanded, it may hold at most this many nodes or
# ALIAS_EXPANSION times the nodes written, whichever is more (a 250k-entry manifest is ~4M nodes, no aliases).
MAX_YAML_NODES = 100_000
ALIAS_EXPANSION = 10
MAX_YAML_BYTES = 256 * 1024 * 1024


def _no_bool_or_text(v: Any) -> Any:
    """Counts, sizes and scales are numbers: YAML's `true` or a quoted "3" is a mistake, not a number."""
    if isinstance(v, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(v, str) and re.fullmatch(r"\s*[-+]?\d+(\.\d*)?([eE][-+]?\d+)?\s*", v):
        raise ValueError("expected a number, got a quoted string (remove the quotes)")
    return v


class LoraRef(BaseModel):
    """A LoRA adapter applied to one entry, at merge scale beta (W = W0 + beta*dW)."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1)
    scale: float = Field(1.0, ge=0.0, le=2.0)

    @field_validator("scale", mode="before")
    @classmethod
    def _strict_scale(cls, v: Any) -> Any:
        return _no_bool_or_text(v)

    @field_validator("path")
    @classmethod
    def _safetensors(cls, v: str) -> str:
        if not v.lower().endswith((".safetensors", ".ckpt", ".bin", ".pt", ".pth")) or v.endswith("/"):
            raise ValueError("expected a .safetensors LoRA file (not a folder or another format)")
        return v


class StepsRange(BaseModel):
    """An entry's step counts; immutable, so entries with the same range share one (see `_steps_range`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min: int = Field(ge=1, le=MAX_STEPS)
    max: int = Field(ge=1, le=MAX_STEPS)

    @model_validator(mode="after")
    def _ordered(self) -> StepsRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


@functools.lru_cache(maxsize=4096)
def _steps_range(lo: int, hi: int) -> StepsRange:
    """One shared StepsRange per range (a large manifest repeats a few ranges in every entry)."""
    return StepsRange(min=lo, max=hi)


def _steps_value(v: Any) -> StepsRange:
    lo = hi = None
    if isinstance(v, bool):
        pass
    elif isinstance(v, int):
        lo = hi = v
    elif isinstance(v, str) and re.fullmatch(r"\s*\d+\s*(-\s*\d+\s*)?", v):
        parts = [int(x) for x in v.split("-")]
        lo, hi = parts[0], parts[-1]
    elif isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        lo, hi = v
    elif isinstance(v, dict) and set(v) == {"min", "max"}:
        lo, hi = v["min"], v["max"]
    if not isinstance(lo, int) or not isinstance(hi, int):
        raise ValueError("expected a step count (e.g. 22) or a range like '20-26'")
    if not (1 <= lo <= MAX_STEPS and 1 <= hi <= MAX_STEPS):
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}")
    if lo > hi:
        raise ValueError(f"range start {lo} is greater than its end {hi}")
    return _steps_range(lo, hi)


_steps_text = functools.lru_cache(maxsize=4096)(_steps_value)


def _known_tones(v: list[str]) -> list[str]:
    for name in v:
        if name not in SKIN_TONES:
            raise ValueError(f"unknown skin tone group {name!r}, expected some of {', '.join(SKIN_TONES)}")
    if len(set(v)) != len(v):
        raise ValueError("skin tone groups must not repeat")
    return v


class Expect(BaseModel):
    """What an entry's images must show, measured by the filter; images outside are dropped and topped up.

    ``skin_tone``: the ITA groups allowed (:data:`dermgen.skintone.SKIN_TONES`), e.g. ``[brown, dark]``.
    """

    model_config = ConfigDict(extra="forbid")
    skin_tone: list[str] = Field(min_length=1)

    @field_validator("skin_tone")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return _known_tones(v)


class SkinToneShare(BaseModel):
    """A distribution target: at least ``min_fraction`` of the kept images of ``label`` (every label when
    omitted) show one of the ``skin_tone`` groups. Planned from the entries' ``expect`` sets and counts."""

    model_config = ConfigDict(extra="forbid")
    label: Literal["benign", "malignant"] | None = None
    skin_tone: list[str] = Field(min_length=1)
    min_fraction: float = Field(gt=0.0, le=1.0)

    @field_validator("skin_tone")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return _known_tones(v)

    def describe(self) -> str:
        return f"{self.label or 'all labels'}: {'+'.join(self.skin_tone)} >= {self.min_fraction:g}"


class Entry(BaseModel):
    """One prompt and how many KEPT images of it the run must deliver."""

    model_config = ConfigDict(extra="forbid")

    id: str
    label: Literal["benign", "malignant"]
    prompt: str = Field(min_length=1)
    negative_prompt: str = ""
    count: int = Field(gt=0, le=10_000_000)
    samplers: list[str] = Field(default_factory=lambda: ["Euler a"], min_length=1)
    steps: StepsRange = Field(default_factory=lambda: StepsRange(min=20, max=20))
    cfg_scale: float = Field(7.0, ge=1.0, le=30.0)
    size: int | tuple[int, int] = 512
    seed_base: int | None = Field(None, ge=0, lt=2**62)
    loras: list[LoraRef] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    filter: dict[str, float | None] = Field(default_factory=dict)
    expect: Expect | None = None

    @field_validator("count", "cfg_scale", "seed_base", mode="before")
    @classmethod
    def _strict_numbers(cls, v: Any) -> Any:
        return _no_bool_or_text(v)

    @field_validator("filter", mode="before")
    @classmethod
    def _strict_thresholds(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for value in v.values():
                _no_bool_or_text(value)
        return v

    @field_validator("id")
    @classmethod
    def _safe_id(cls, v: str) -> str:
        if not ID_PATTERN.match(v) or ".." in v:
            raise ValueError(
                "must be 1-128 characters of letters, digits, '_', '-', '.', start with a letter or digit, "
                "and contain no '..' or '/' (ids become object keys under the output prefix)"
            )
        return v

    @field_validator("samplers", mode="before")
    @classmethod
    def _one_sampler(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("samplers")
    @classmethod
    def _known_samplers(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in SAMPLER_NAMES:
                raise ValueError(f"unknown sampler {name!r}, expected one of {', '.join(SAMPLER_NAMES)}")
        return v

    @field_validator("steps", mode="before")
    @classmethod
    def _steps_forms(cls, v: Any) -> Any:
        """Accept 22, "20-26", [20, 26] or {min, max}; one clear message for anything else."""
        if isinstance(v, StepsRange):
            return v
        if type(v) is str:  # a manifest holds a few distinct texts, however many entries
            return _steps_text(v)
        return _steps_value(v)

    @field_validator("size", mode="before")
    @classmethod
    def _size_forms(cls, v: Any) -> Any:
        if isinstance(v, bool) or (isinstance(v, list) and any(isinstance(x, bool | str) for x in v)):
            raise ValueError("expected a side in pixels (512), WIDTHxHEIGHT ('512x640') or [width, height]")
        if isinstance(v, str) and re.fullmatch(r"\d+x\d+", v):
            w, h = v.split("x")
            return (int(w), int(h))
        if isinstance(v, list):
            return tuple(v)
        return v

    @field_validator("size")
    @classmethod
    def _size_ok(cls, v: int | tuple[int, int]) -> int | tuple[int, int]:
        for side in (v,) if isinstance(v, int) else v:
            if not MIN_SIZE <= side <= MAX_SIZE or side % 8:
                raise ValueError(f"sides must be multiples of 8 between {MIN_SIZE} and {MAX_SIZE}")
        return v

    @property
    def width_height(self) -> tuple[int, int]:
        return (self.size, self.size) if isinstance(self.size, int) else self.size

    @property
    def steps_bounds(self) -> tuple[int, int]:
        return (self.steps.min, self.steps.max)


class Manifest(BaseModel):
    """A named list of entries; `defaults` are merged into every entry before validation."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    model: str | None = None
    entries: list[Entry] = Field(min_length=1)
    distribution: list[SkinToneShare] = Field(default_factory=list)

    @field_validator("entries")
    @classmethod
    def _unique_ids(cls, v: list[Entry]) -> list[Entry]:
        seen: set[str] = set()
        for e in v:
            if e.id in seen:
                raise ValueError(f"duplicate entry id {e.id!r}; ids must be unique")
            seen.add(e.id)
        return v

    @model_validator(mode="after")
    def _distribution_plannable(self) -> Manifest:
        for i, share in enumerate(self.distribution):
            total, sure, ids = planned_share(self.entries, share, {e.id: e.count for e in self.entries})
            if total == 0:
                raise ValueError(
                    f"distribution[{i}] ({share.describe()}): the manifest has no {share.label} entry"
                )
            if sure / total < share.min_fraction:
                raise ValueError(
                    f"distribution[{i}] ({share.describe()}): the entries can only guarantee "
                    f"{sure / total:.3f} ({sure} of {total} images from entries whose expect.skin_tone lies "
                    f"within {'+'.join(share.skin_tone)}: {', '.join(ids) or 'none'}); "
                    "add expect.skin_tone to more entries or raise their counts"
                )
        return self

    @property
    def total(self) -> int:
        return sum(e.count for e in self.entries)

    def counts_by_label(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries:
            out[e.label] = out.get(e.label, 0) + e.count
        return out


def planned_share(
    entries: list[Entry], share: SkinToneShare, targets: dict[str, int]
) -> tuple[int, int, list[str]]:
    """(images of the share's label, images guaranteed inside its groups, ids of those entries).

    Only an entry whose ``expect.skin_tone`` lies within the share's groups guarantees anything: its kept
    images are measured to be there. ``targets`` maps entry id -> planned kept count.
    """
    total, sure, ids = 0, 0, []
    for e in entries:
        if share.label is not None and e.label != share.label:
            continue
        total += targets.get(e.id, 0)
        if e.expect and set(e.expect.skin_tone) <= set(share.skin_tone):
            sure += targets.get(e.id, 0)
            ids.append(e.id)
    return total, sure, ids


class _Full(Exception):
    pass


def _emit(value: Any, out: list[str], room: list[int]) -> None:
    def put(text: str) -> None:
        out.append(text)
        room[0] -= len(text)
        if room[0] < 0:
            raise _Full

    if isinstance(value, dict):
        put("{")
        for i, (k, v) in enumerate(value.items()):
            put(", " if i else "")
            _emit(k, out, room)
            put(": ")
            _emit(v, out, room)
        put("}")
    elif isinstance(value, list | tuple):
        put("[" if isinstance(value, list) else "(")
        for i, v in enumerate(value):
            put(", " if i else "")
            _emit(v, out, room)
        put("]" if isinstance(value, list) else ("," if len(value) == 1 else "") + ")")
    else:
        put(repr(value)[: room[0] + 1])


def _short_repr(value: Any, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters, rendered only as far as needed: a value built from YAML
    aliases may be astronomically large when walked in full."""
    out: list[str] = []
    try:
        _emit(value, out, [limit])
    except _Full:
        return "".join(out)[: limit - 3] + "..."
    return "".join(out)


def _format_validation(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc = ""
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        if err["type"] == "missing":
            lines.append(f"{source}: {loc}: missing required key")
            continue
        if not loc:  # a whole-manifest check: its message names the field itself
            lines.append(f"{source}: {msg}")
            continue
        got = _short_repr(err.get("input"))
        lines.append(f"{source}: {loc or '<root>'}: {msg} (got {got})")
    return "\n".join(lines)


def _resolve_lora_paths(entries: list[Any], base_dir: Path) -> list[Any]:
    """Relative LoRA paths in a manifest mean "beside the manifest", not the working directory."""
    from dermgen.uri import is_s3

    out = []
    for e in entries:
        if isinstance(e, dict) and isinstance(e.get("loras"), list):
            loras = []
            for lr in e["loras"]:
                if isinstance(lr, dict) and isinstance(lr.get("path"), str) and lr["path"]:
                    p = lr["path"]
                    if not is_s3(p) and not Path(p).expanduser().is_absolute():
                        lr = {**lr, "path": str((base_dir / p).resolve())}
                loras.append(lr)
            e = {**e, "loras": loras}
        out.append(e)
    return out


def parse_manifest(data: Any, source: str = "<manifest>", base_dir: Path | None = None) -> Manifest:
    """Validate a parsed YAML document into a Manifest (merging `defaults` into entries; relative LoRA
    paths resolved against `base_dir`, the manifest's folder, when given)."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping with 'name' and 'entries', got {type(data).__name__}"
        )
    data = dict(data)
    defaults = data.pop("defaults", None) or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{source}: defaults: expected a mapping, got {defaults!r}")
    entries = data.get("entries")
    if isinstance(entries, list) and defaults:
        data["entries"] = [{**defaults, **e} if isinstance(e, dict) else e for e in entries]
    if base_dir is not None and isinstance(data.get("entries"), list):
        data["entries"] = _resolve_lora_paths(data["entries"], base_dir)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(source, exc)) from None


_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_JSON_START = re.compile(r"\s*\{")


class _NotPlainJson(ValueError):
    """A JSON object with a repeated key: left to the YAML loader, which owns the rules for it."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _NotPlainJson
    return out


def _json_document(text: str) -> Any | None:
    """A manifest written as JSON (a subset of YAML, so also a valid YAML manifest), parsed as JSON.

    Machine-made manifests with hundreds of thousands of entries parse in about a second this way instead
    of a minute through a YAML parser. None when the text is not plain JSON: the YAML loader decides then.
    """
    if not _JSON_START.match(text):
        return None
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except ValueError:  # includes _NotPlainJson and json.JSONDecodeError
        return None


@contextlib.contextmanager
def paused_gc(freeze_over: int = 250_000) -> Iterator[None]:
    """Python's cyclic garbage collector off while a large manifest or plan is built.

    What is built holds no reference cycles, yet each collection the allocations trigger walks every object
    built so far: about half the CPU time of loading and planning a 250k-entry manifest. Garbage made
    meanwhile is freed by reference counting as usual. When more than `freeze_over` objects were built,
    they (and whatever else is alive) are moved out of the collector's sight (`gc.freeze`): they live as
    long as the run, and walking them again after every few thousand allocations costs seconds; they are
    still freed by reference counting, only reference cycles among them would never be collected.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if gc.get_count()[0] > freeze_over:
                gc.freeze()
            gc.enable()


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a YAML manifest file."""
    with paused_gc():
        return _load_manifest(path)


def _load_manifest(path: str | Path) -> Manifest:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--manifest: {str(path)!r} does not exist or is not a file")
    if p.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(
            f"{p.name}: {p.stat().st_size:,d} bytes, more than a manifest may hold ({MAX_YAML_BYTES:,d})"
        )
    text = p.read_text()
    data = _json_document(text)
    if data is not None:
        return parse_manifest(data, source=p.name, base_dir=p.resolve().parent)
    try:
        data = _load_yaml(text, p.name)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p.name}: malformed YAML{where}: {problem}") from None
    return parse_manifest(data, source=p.name, base_dir=p.resolve().parent)


class _StrictMappings:
    """Loader mix-in that refuses duplicate keys."""

    source = "<manifest>"

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # unhashable keys: let the base class report them
            if first is not None:
                raise ConfigError(
                    f"{self.source}: duplicate key {_short_repr(key)} at line {key_node.start_mark.line + 1} "
                    f"(first at line {first}); each key may appear once"
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


class _ManifestLoader(_StrictMappings, yaml.SafeLoader):
    """The pure-Python safe loader, strict: its error messages are the documented ones."""


class _FastManifestLoader(_StrictMappings, _SAFE_LOADER):
    """libyaml's safe loader (when PyYAML is built with it), strict: large manifests parse several times
    faster. On a YAML error the pure-Python loader parses again, for its messages."""


def _expanded_size(node, memo: dict[int, int], aliases: list[int]) -> int:
    """Nodes the document holds once every alias is expanded (linear time: shared nodes counted once
    each, then multiplied, never walked again)."""
    if id(node) in memo:
        aliases[0] += 1
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once; PyYAML constructs it lazily
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(c, memo, aliases) for c in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(
            _expanded_size(k, memo, aliases) + _expanded_size(v, memo, aliases) for k, v in node.value
        )
    else:
        size = 1
    memo[id(node)] = size
    return size


# An anchor is "&" and a name; a document without one has no aliases, so nothing in it can expand.
_ANCHOR = re.compile(r"&[^\s,\[\]{}]")
_YAML_TAG = "tag:yaml.org,2002:"
_STR, _INT, _MAP, _SEQ, _MERGE = (_YAML_TAG + t for t in ("str", "int", "map", "seq", "merge"))


class _Unusual(Exception):
    """Something only the full loader handles (a merge key, a repeated or unhashable key, a tagged
    collection): the document is loaded again by it."""


class _TreeLoader(_SAFE_LOADER):
    """Composes a document into nodes with the safe loader's tags; plain scalars' tags are cached by value
    (keys and short values repeat in every entry of a large manifest), quoted scalars are strings."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._plain_tags: dict[str, str] = {}

    def resolve(self, kind, value, implicit, _resolve=_SAFE_LOADER.resolve):
        if kind is not yaml.ScalarNode or self.yaml_path_resolvers:
            return _resolve(self, kind, value, implicit)
        if not implicit[0]:
            return _STR
        tag = self._plain_tags.get(value)
        if tag is None:
            tag = _resolve(self, kind, value, implicit)
            if len(value) <= 32:
                self._plain_tags[value] = tag
        return tag


def _load_tree(text: str) -> Any:
    """The document as the strict safe loader builds it, for documents without anchors (so without aliases
    and nothing to expand), built straight from libyaml's events: no node tree, no constructor machinery,
    a few operations per event. Raises _Unusual (or any error) where the full loader must decide."""
    from yaml import events

    loader = _TreeLoader(text)
    try:
        get, resolve, scalar_node = loader.get_event, loader.resolve, yaml.ScalarNode
        # _TreeLoader.resolve inlined for scalars (its cache, quoted scalars are strings) unless path
        # resolvers were registered, which only resolve itself applies
        plain_tags, inline = loader._plain_tags, not loader.yaml_path_resolvers
        mapping_start, sequence_start = events.MappingStartEvent, events.SequenceStartEvent
        ends = (events.MappingEndEvent, events.SequenceEndEvent)
        get()  # the stream's start
        if isinstance(get(), events.StreamEndEvent):
            return None  # no document
        no_key = object()
        stack: list[list] = []  # [the collection, is a mapping, its pending key or no_key]
        while True:
            event = get()
            cls = event.__class__
            if cls is events.ScalarEvent:
                tag, value = event.tag, event.value
                if event.anchor is not None:
                    raise _Unusual
                if tag is None or tag == "!":
                    implicit = event.implicit
                    if not inline:
                        tag = resolve(scalar_node, value, implicit)
                    elif implicit[0]:
                        tag = plain_tags.get(value) or resolve(scalar_node, value, implicit)
                    else:
                        tag = _STR  # quoted: a string
                if tag == _STR:
                    item = value
                elif tag == _INT and value.isdigit() and value.isascii() and value[0] != "0":
                    item = int(value)
                elif tag == _MERGE:
                    raise _Unusual
                else:  # null, bool, float, other ints and tags: the safe constructor's own rules
                    node = scalar_node(tag, value, event.start_mark, event.end_mark, event.style)
                    item = loader.construct_object(node, deep=True)
            elif cls is mapping_start or cls is sequence_start:
                if event.anchor is not None or event.tag not in (None, "!"):
                    raise _Unusual
                stack.append([{} if cls is mapping_start else [], cls is mapping_start, no_key])
                continue
            elif cls in ends:
                item = stack.pop()[0]
            elif cls is events.DocumentEndEvent:
                if not isinstance(get(), events.StreamEndEvent):
                    raise _Unusual  # a second document: the full loader refuses it in its words
                return item
            else:
                raise _Unusual  # an alias (to an undefined anchor)
            if not stack:
                continue  # the document's root; its end comes next
            top = stack[-1]
            if not top[1]:
                top[0].append(item)
            elif top[2] is no_key:
                hash(item)  # an unhashable key: the full loader reports it
                top[2] = item
            else:
                if top[2] in top[0]:
                    raise _Unusual  # a repeated key: the full loader names it and its lines
                top[0][top[2]] = item
                top[2] = no_key
    finally:
        loader.dispose()


def _load_yaml(text: str, source: str) -> Any:
    if _SAFE_LOADER is not yaml.SafeLoader and not _ANCHOR.search(text):
        try:
            return _load_tree(text)
        except Exception:  # noqa: BLE001 -- whatever it is, the full loader below decides and words it
            pass
    try:
        return _load_yaml_with(_FastManifestLoader, text, source)
    except yaml.YAMLError:
        return _load_yaml_with(_ManifestLoader, text, source)


def _load_yaml_with(loader_cls, text: str, source: str) -> Any:
    loader = loader_cls(text)
    loader.source = source
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        aliases, memo = [0], {}
        size = _expanded_size(node, memo, aliases)
        allowed = max(MAX_YAML_NODES, ALIAS_EXPANSION * len(memo))
        if size > allowed:
            raise ConfigError(
                f"{source}: YAML anchors/aliases expand {len(memo):,d} nodes to {size:,d} ({aliases[0]:,d} "
                f"aliases); a manifest may expand to at most {allowed:,d} nodes"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def manifest_hash(manifest: Manifest) -> str:
    """sha256 of the validated manifest's canonical JSON (formatting and comments do not matter).

    Unset ``expect`` and ``distribution`` are left out, so manifests without them hash as they always did.
    """
    exclude: dict[str, Any] = {}
    if not manifest.distribution:
        exclude["distribution"] = True
    unset = {i: {"expect"} for i, e in enumerate(manifest.entries) if e.expect is None}
    if unset:
        exclude["entries"] = unset
    return hashlib.sha256(manifest.model_dump_json(exclude=exclude or None).encode()).hexdigest()
