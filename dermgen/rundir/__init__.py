"""The one owner of a run's on-disk form: layout, run.json, committed shards, rows, summaries, sweep.

    from dermgen.rundir import RunDir
    rd = RunDir.open("s3://bucket/derm-6k")
    info = rd.info(); plan = info.plan(); rows = rd.rows(["sample_id", "label", "kept"])

Writers (`dermgen.shards.commit_shard`, `dermgen.run`) use the same layout; readers never parse run.json
or list shards themselves.
"""

from dermgen.rundir.images import (
    IMAGE_LAYOUTS,
    ImageLayout,
    image_bytes,
    image_name,
    image_value,
    layout_problem,
    writes_png_objects,
)
from dermgen.rundir.layout import (
    CLAIMS_PREFIX,
    IMAGES_PREFIX,
    RUN_JSON,
    SHARDS_PREFIX,
    SUMMARY_JSON,
    Listing,
    claim_key,
    classify,
    image_key,
    parse_image_key,
    parse_shard_id,
    shard_key,
)
from dermgen.rundir.model import AdapterBinding, Binding, RunInfo, ShardSummary, summarise_shard
from dermgen.rundir.parallel import READ_WORKERS, bounded_map
from dermgen.rundir.reader import RunDir

__all__ = [
    "IMAGE_LAYOUTS",
    "CLAIMS_PREFIX",
    "IMAGES_PREFIX",
    "RUN_JSON",
    "SHARDS_PREFIX",
    "SUMMARY_JSON",
    "AdapterBinding",
    "Binding",
    "Listing",
    "READ_WORKERS",
    "RunDir",
    "RunInfo",
    "ImageLayout",
    "ShardSummary",
    "bounded_map",
    "claim_key",
    "classify",
    "image_bytes",
    "image_key",
    "image_name",
    "image_value",
    "layout_problem",
    "parse_image_key",
    "parse_shard_id",
    "shard_key",
    "summarise_shard",
    "writes_png_objects",
]
