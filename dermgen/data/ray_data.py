"""A run as a Ray Data dataset, for Ray Train users: ``ray.data.read_parquet`` on exactly the run's committed
shards (listed by `dermgen.rundir`, read through the run store's one client configuration).

    from dermgen.data.ray_data import read_run
    ds = read_run("s3://bucket/derm-6k", image_size=224)   # rows: image (HxWx3 uint8), label, sample_id, ...
    trainer = TorchTrainer(loop, datasets={"train": ds}, ...)

The same `Selection` as the PyTorch loaders (kept, status "ok", `where`, score bounds, predicate) is
applied with ``Dataset.filter`` (status and kept as an Arrow expression, the rest row by row); the image is decoded to a numpy array (optionally resized) in ``map``.
Ray is imported only inside this module's functions.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from dermgen.data.labels import LabelMap
from dermgen.data.runs import Run, Selection, make_selection, open_run
from dermgen.errors import StoreError, missing_dependency
from dermgen.hashing import sha256_bytes

DEFAULT_COLUMNS: tuple[str, ...] = ("sample_id", "entry_id", "label_name", "sampler", "steps", "seed")


class _Keep:
    """Row filter: the Selection (picklable, so Ray ships it to its workers)."""

    def __init__(self, selection: Selection) -> None:
        self.selection = selection

    def __call__(self, row: dict[str, Any]) -> bool:
        return self.selection.matches(row) and row.get("image") is not None


class _Decode:
    """Row map: PNG bytes -> HxWx3 uint8 array (resized to `image_size` when given), label -> id."""

    def __init__(
        self, label_map: LabelMap, image_size: int | None, columns: Sequence[str], verify_images: bool = False
    ) -> None:
        self.label_map = label_map
        self.image_size = image_size
        self.columns = tuple(columns)
        self.verify_images = verify_images

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        from PIL import Image

        data = row["image"]["bytes"]
        if self.verify_images and row.get("image_sha256") and sha256_bytes(data) != row["image_sha256"]:
            raise StoreError(f"image of {row.get('sample_id')} does not match its image_sha256")
        img = Image.open(io.BytesIO(data)).convert("RGB")
        if self.image_size:
            img = img.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        label = self.label_map.id(row["label"])
        out = {"image": np.asarray(img), "label": label}
        for c in self.columns:
            out[c] = self.label_map.name(label) if c == "label_name" else row.get(c)
        return out


def _base_expr(selection: Selection):
    from ray.data.expressions import col

    expr = col("status").is_in(list(selection.statuses))
    if not selection.include_dropped:
        expr = expr & (col("kept") == True)  # noqa: E712 - an expression, not a comparison
    return expr


def read_run(
    run: str | os.PathLike | Run,
    *,
    selection: Selection | None = None,
    include_dropped: bool | None = None,
    where: Mapping[str, Any] | None = None,
    min_scores: Mapping[str, float] | None = None,
    max_scores: Mapping[str, float] | None = None,
    predicate: Callable[[dict[str, Any]], bool] | None = None,
    label_map: LabelMap | Mapping[str, int] | None = None,
    image_size: int | None = None,
    decode: bool = True,
    columns: Sequence[str] = DEFAULT_COLUMNS,
    strict: bool = False,
    verify_images: bool = False,
    **read_parquet_kwargs: Any,
):
    """A ``ray.data.Dataset`` of a run's selected rows.

    With ``decode`` (default) rows are ``{"image": uint8 HxWx3, "label": int, <columns>}``; without it,
    the filtered shard rows as stored (image as ``{"bytes", "path"}``) for custom decoding.
    Extra keyword arguments go to ``ray.data.read_parquet`` (e.g. ``override_num_blocks``).
    """
    try:
        import ray.data
    except ImportError:
        raise missing_dependency("ray[data]") from None
    r = open_run(run, label_map=label_map, strict=strict)
    r.check_rows()  # duplicates or foreign rows raise here, as in the PyTorch loaders
    sel = make_selection(
        selection,
        include_dropped=include_dropped,
        where=where,
        min_scores=min_scores,
        max_scores=max_scores,
        predicate=predicate,
    )
    fs, _ = r.filesystem()
    paths = [r.shard_path(s) for s in r.shard_ids]
    ds = ray.data.read_parquet(paths, filesystem=fs, **read_parquet_kwargs)
    ds = ds.filter(expr=_base_expr(sel))  # status / kept as an Arrow expression (vectorised)
    if sel.include_dropped or sel.where or sel.min_scores or sel.max_scores or sel.predicate:
        ds = ds.filter(_Keep(sel))  # the rest row by row, with the very code the torch loaders use
    if decode:
        ds = ds.map(_Decode(r.label_map, image_size, columns, verify_images))
    return ds
