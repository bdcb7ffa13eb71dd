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
