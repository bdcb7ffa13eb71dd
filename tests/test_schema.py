import json

import pyarrow as pa

from dermgen.filters.names import SCORE_NAMES
from dermgen.schema import COLUMNS, SHARD_SCHEMA


def test_schema_has_required_columns():
    required = {
        "sample_id",
        "shard_id",
        "entry_id",
        "label",
        "tags",
        "prompt",
        "negative_prompt",
        "seed",
        "sampler",
        "steps",
        "cfg_scale",
        "width",
        "height",
        "loras",
        "model_id",
        "model_sha256",
        "image",
        "image_sha256",
        "kept",
        "drop_reasons",
        "scores",
        "timings",
        "actor",
        "node",
        "device",
        "created_at",
        "status",
        "error",
    }
    assert required <= set(COLUMNS)
    assert SHARD_SCHEMA.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert [f.name for f in SHARD_SCHEMA.field("scores").type] == list(SCORE_NAMES)


def test_hugging_face_metadata_declares_image_feature():
    meta = json.loads(SHARD_SCHEMA.metadata[b"huggingface"])
    feats = meta["info"]["features"]
    assert feats["image"] == {"_type": "Image"}
    assert set(feats) == set(COLUMNS)


def _old_shard(n: int = 2) -> pa.Table:
    """Rows as a version before the later columns and scores wrote them."""
    from dermgen.schema import LATER_COLUMNS, LATER_SCORES, SCORES_TYPE, SHARD_SCHEMA

    required = {
        "sample_id": "e-0000000", "shard_id": "e-0000000-0000002", "run_id": "r", "attempt_id": "a",
        "entry_id": "e", "index": 0, "label": "benign", "seed": 1, "status": "ok", "kept": True,
    }  # fmt: skip
    scores = {f.name: 0.25 for f in SCORES_TYPE}
    table = pa.Table.from_pylist([dict(required, scores=scores) for _ in range(n)], schema=SHARD_SCHEMA)
    table = table.drop_columns(list(LATER_COLUMNS))
    old_type = pa.struct([f for f in SCORES_TYPE if f.name not in LATER_SCORES])
    return table.set_column(
        table.schema.get_field_index("scores"),
        pa.field("scores", old_type),
        table.column("scores").cast(old_type),
    )


def test_older_shards_conform_to_the_current_schema_with_nulls():
    from dermgen.schema import SHARD_SCHEMA, conform, schema_problems

    old = _old_shard()
    assert schema_problems(old.schema) == []  # what older versions lacked is not a problem
    now = conform(old)
    assert now.schema.equals(SHARD_SCHEMA, check_metadata=False)
    row = now.to_pylist()[0]
    assert row["skin_tone"] is None and row["noise"] is None and row["prompt_tokens"] is None
    assert row["scores"]["ita"] is None and row["scores"]["ink"] == 0.25
    assert conform(old, ["sample_id", "skin_tone"]).column_names == ["sample_id", "skin_tone"]


def test_schema_problems_name_what_is_really_wrong():
    from dermgen.schema import schema_problems

    old = _old_shard()
    assert ("seed", "missing") in schema_problems(old.drop_columns(["seed"]).schema)
    relabelled = old.set_column(
        old.schema.get_field_index("index"), "index", old.column("index").cast(pa.string())
    )
    assert [c for c, _ in schema_problems(relabelled.schema)] == ["index"]
    assert ("extra", "not in the shard schema") in schema_problems(
        old.append_column("extra", pa.nulls(2)).schema
    )
