"""The one pyarrow schema of shard rows, and the Hugging Face metadata that makes `image` load as PIL.

Every planned sample gets a row, failed ones too (``status`` = "failed", ``image`` null).
The ``image`` column is a struct of ``bytes`` and ``path`` as the Hugging Face ``Image`` feature expects.
``bytes`` always holds the PNG; ``path`` is the key of its separate PNG object in the ``files`` image layout,
and null in the ``parquet`` layout, where the row's bytes are the only copy (``dermgen.rundir.images``).
"""

from __future__ import annotations

import json

import pyarrow as pa

from dermgen.filters.names import SCORE_NAMES

SCHEMA_VERSION = 1

LORA_TYPE = pa.struct(
    [
        pa.field("name", pa.string()),
        pa.field("path", pa.string()),
        pa.field("scale", pa.float32()),
        pa.field("sha256", pa.string()),
    ]
)
IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
SCORES_TYPE = pa.struct([pa.field(name, pa.float32()) for name in SCORE_NAMES])
TIMINGS_TYPE = pa.struct(
    [
        pa.field("generate_s", pa.float32()),
        pa.field("encode_s", pa.float32()),
        pa.field("filter_s", pa.float32()),
    ]
)

_FIELDS = [
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("shard_id", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("attempt_id", pa.string(), nullable=False),
    pa.field("entry_id", pa.string(), nullable=False),
    pa.field("index", pa.int32(), nullable=False),
    pa.field("label", pa.string(), nullable=False),
    pa.field("tags", pa.list_(pa.string())),
    pa.field("prompt", pa.string()),
    pa.field("negative_prompt", pa.string()),
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("sampler", pa.string()),
    pa.field("steps", pa.int32()),
    pa.field("cfg_scale", pa.float32()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("batch_size", pa.int32()),
    pa.field("loras", pa.list_(LORA_TYPE)),
    pa.field("model_id", pa.string()),
    pa.field("model_sha256", pa.string()),
    pa.field("model_hash", pa.string()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("image", IMAGE_TYPE),
    pa.field("image_sha256", pa.string()),
    pa.field("kept", pa.bool_(), nullable=False),
    pa.field("drop_reasons", pa.list_(pa.string())),
    pa.field("scores", SCORES_TYPE),
    pa.field("skin_tone", pa.string()),  # group of scores.ita (dermgen.filters.skintone); null if unmeasured
    pa.field("timings", TIMINGS_TYPE),
    pa.field("actor", pa.string()),
    pa.field("node", pa.string()),
    pa.field("device", pa.string()),
    pa.field("noise", pa.string()),  # where the sample's noise was drawn: cpu | cuda (re-render on the same)
    pa.field("created_at", pa.timestamp("ms", tz="UTC")),
    # CLIP tokens of the prompt (without begin/end) and whether the text encoder cut it off (> 75)
    pa.field("prompt_tokens", pa.int32()),
    pa.field("prompt_truncated", pa.bool_()),
]

COLUMNS: tuple[str, ...] = tuple(f.name for f in _FIELDS)
# Columns and scores added after the first shards were written: shards written before lack them, readers
# give null (`conform`) and verify accepts their absence (`schema_problems`).
LATER_COLUMNS: tuple[str, ...] = ("skin_tone", "noise", "prompt_tokens", "prompt_truncated")
LATER_SCORES: tuple[str, ...] = ("ita", "smear")


def _hf_features() -> dict:
    """Hugging Face `datasets` features for the schema (only `image` differs from what it infers)."""

    def value(dtype: str) -> dict:
        return {"dtype": dtype, "_type": "Value"}

    def seq(feature: dict) -> dict:
        return {"feature": feature, "_type": "List"}

    arrow_to_hf = {
        pa.string(): value("string"),
        pa.int32(): value("int32"),
        pa.int64(): value("int64"),
        pa.float32(): value("float32"),
        pa.bool_(): value("bool"),
        pa.binary(): value("binary"),
        pa.timestamp("ms", tz="UTC"): value("timestamp[ms, tz=UTC]"),
    }

    def convert(t: pa.DataType) -> dict:
        if t in arrow_to_hf:
            return arrow_to_hf[t]
        if pa.types.is_list(t):
            return seq(convert(t.value_type))
        if pa.types.is_struct(t):
            return {t.field(i).name: convert(t.field(i).type) for i in range(t.num_fields)}
        raise TypeError(f"no Hugging Face feature for {t}")

    feats = {f.name: convert(f.type) for f in _FIELDS}
    feats["image"] = {"_type": "Image"}
    return feats


SHARD_SCHEMA = pa.schema(
    _FIELDS,
    metadata={
        b"dermgen.schema_version": str(SCHEMA_VERSION).encode(),
        b"huggingface": json.dumps({"info": {"features": _hf_features()}}).encode(),
    },
)


REQUIRED_COLUMNS: frozenset[str] = frozenset(f.name for f in _FIELDS if not f.nullable)


def check_row(row: dict) -> dict:
    """A shard row as the schema defines it: ValueError naming unknown or missing required columns."""
    unknown = set(row) - set(COLUMNS)
    missing = {c for c in REQUIRED_COLUMNS if row.get(c) is None}
    if unknown or missing:
        raise ValueError(
            f"shard row {row.get('sample_id')!r}: unknown columns {sorted(unknown)}, missing {sorted(missing)}"
        )
    return row


def empty_scores() -> dict[str, float | None]:
    """A scores struct with every score null (used when filtering is off or an image failed)."""
    return {name: None for name in SCORE_NAMES}


def _struct_fields(t: pa.DataType) -> dict[str, pa.DataType]:
    return {t.field(i).name: t.field(i).type for i in range(t.num_fields)}


def schema_problems(schema: pa.Schema) -> list[tuple[str, str]]:
    """(column, what) for each way a stored shard's schema departs from SHARD_SCHEMA; the columns and
    scores that older shards lack (LATER_COLUMNS, LATER_SCORES) are not problems."""
    got = {f.name: f.type for f in schema}
    out = []
    for f in SHARD_SCHEMA:
        if f.name not in got:
            if f.name not in LATER_COLUMNS:
                out.append((f.name, "missing"))
        elif f.name == "scores" and pa.types.is_struct(got[f.name]):
            have, want = _struct_fields(got[f.name]), _struct_fields(f.type)
            bad = [n for n, t in have.items() if want.get(n) != t]
            bad += [n for n in want if n not in have and n not in LATER_SCORES]
            if bad:
                out.append((f.name, f"struct differs in {sorted(bad)}"))
        elif got[f.name] != f.type:
            out.append((f.name, f"{got[f.name]} instead of {f.type}"))
    out += [(name, "not in the shard schema") for name in got if name not in SHARD_SCHEMA.names]
    return out


def conform(table: pa.Table, columns: list[str] | None = None) -> pa.Table:
    """`table` (as stored, possibly by an older version) in the current schema, or only `columns` of it:
    later columns and scores it lacks are null."""
    names = list(columns) if columns is not None else list(SHARD_SCHEMA.names)
    arrays, fields = [], []
    for name in names:
        field = SHARD_SCHEMA.field(name)
        if name not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, field.type))
        elif name == "scores" and table.schema.field(name).type != field.type:
            col = table.column(name).combine_chunks()
            children = [
                col.field(sub.name).cast(sub.type)
                if col.type.get_field_index(sub.name) >= 0
                else pa.nulls(len(col), sub.type)
                for sub in field.type
            ]
            arrays.append(pa.StructArray.from_arrays(children, fields=list(field.type), mask=col.is_null()))
        else:
            arrays.append(table.column(name).cast(field.type))
        fields.append(field)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=SHARD_SCHEMA.metadata))
