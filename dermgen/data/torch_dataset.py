"""PyTorch datasets over runs and real-image folders: one output contract for both.

- `ImageDataset`: the map-style base (records + image bytes by index). `RunDataset` reads a run's
  selected rows; `dermgen.data.real.FolderDataset` reads ``<root>/<label>/*.png|jpg``.
- `RunIterableDataset`: streams a run's row groups, split across DataLoader workers and distributed
  ranks without duplicates (see `assign_units` for the split and how uneven splits are handled).

Every item is decoded to an RGB PIL image, then either passed to `transform` (whose result is returned
as is) or converted to `image_format` ("pil", "numpy" HWC uint8, "tensor" CHW float in [0, 1]).
`output="tuple"` gives ``(image, label_id)``; `output="dict"` gives ``image``, ``label`` (id),
``label_name``, ``sample_id``, ``source`` and the requested `metadata_columns` ("all" for every
metadata field; not every field collates, so use a custom collate_fn then).
"""

from __future__ import annotations

import copy
import io
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from dermgen.data.labels import LabelMap
from dermgen.data.runs import IoMode, RowIndex, Run, Selection, Unit, make_selection, open_run
from dermgen.data.transforms import Resize, ToTensor
from dermgen.errors import ConfigError

log = logging.getLogger(__name__)

OutputMode = Literal["tuple", "dict"]
ImageFormat = Literal["pil", "numpy", "tensor"]


def decode_image(data: bytes) -> Image.Image:
    """PNG/JPEG bytes -> a loaded RGB PIL image."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img if img.mode == "RGB" else img.convert("RGB")


class SampleFormatter:
    """Turns (image bytes, record) into what a dataset yields; shared by every dataset here."""

    def __init__(
        self,
        label_map: LabelMap,
        *,
        transform: Callable[[Image.Image], Any] | None = None,
        output: OutputMode = "tuple",
        image_format: ImageFormat = "pil",
        metadata_columns: Sequence[str] | Literal["all"] = (),
    ) -> None:
        if output not in ("tuple", "dict"):
            raise ConfigError(f"output: {output!r} is not one of 'tuple', 'dict'")
        if image_format not in ("pil", "numpy", "tensor"):
            raise ConfigError(f"image_format: {image_format!r} is not one of 'pil', 'numpy', 'tensor'")
        self.label_map = label_map
        self.transform = transform
        self.output = output
        self.image_format = image_format
        self.metadata_columns = metadata_columns if metadata_columns == "all" else tuple(metadata_columns)
        self._to_tensor = ToTensor()

    def image(self, data: bytes | Image.Image) -> Any:
        """Decoded (if bytes) and transformed / converted image."""
        img = decode_image(data) if isinstance(data, bytes | bytearray | memoryview) else data
        if self.transform is not None:
            return self.transform(img)
        if self.image_format == "numpy":
            return np.asarray(img)
        if self.image_format == "tensor":
            return self._to_tensor(img)
        return img

    def __call__(self, data: bytes | Image.Image, record: Mapping[str, Any]) -> Any:
        """The item for image bytes (or an already decoded PIL image) and its record."""
        image = self.image(data)
        label = int(record["label_id"])
        if self.output == "tuple":
            return image, label
        out: dict[str, Any] = {
            "image": image,
            "label": label,
            "label_name": self.label_map.name(label),
            "sample_id": record["sample_id"],
            "source": record["source"],
        }
        cols = (
            [c for c in record if c not in out] if self.metadata_columns == "all" else self.metadata_columns
        )
        for c in cols:
            if c not in record:
                raise KeyError(f"metadata column {c!r} not in this dataset's records (have {sorted(record)})")
            out[c] = record[c]
        return out


class ImageDataset(Dataset):
    """Map-style base: `records[i]` (metadata with ``label_id``, ``sample_id``, ``source``) + bytes."""

    records: list[dict[str, Any]]
    formatter: SampleFormatter

    def image_bytes(self, index: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_image(self, index: int) -> bytes | Image.Image:
        """What the formatter decodes for item `index`: its encoded bytes (or a decoded image, if cached)."""
        return self.image_bytes(index)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Any:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.formatter(self.load_image(index), self.records[index])

    @property
    def labels(self) -> list[int]:
        """Class id of every item (no image decoding): for stratified splits and class weights."""
        return [int(r["label_id"]) for r in self.records]

    @property
    def label_map(self) -> LabelMap:
        return self.formatter.label_map

    def subset(self, indices: Sequence[int]) -> ImageSubset:
        """A view on some items (same decoding and output settings)."""
        return ImageSubset(self, indices)

    def with_format(
        self,
        *,
        transform: Callable[[Image.Image], Any] | None = None,
        output: OutputMode | None = None,
        image_format: ImageFormat | None = None,
        metadata_columns: Sequence[str] | Literal["all"] | None = None,
    ) -> ImageDataset:
        """A shallow copy yielding items another way (e.g. a training vs an evaluation transform)."""
        f = self.formatter
        clone = copy.copy(self)
        clone.formatter = SampleFormatter(
            f.label_map,
            transform=transform,
            output=output or f.output,
            image_format=image_format or f.image_format,
            metadata_columns=f.metadata_columns if metadata_columns is None else metadata_columns,
        )
        return clone


class ImageSubset(ImageDataset):
    """Some items of an ImageDataset, by index (like torch's Subset, keeping records and labels)."""

    def __init__(self, parent: ImageDataset, indices: Sequence[int]) -> None:
        n = len(parent)
        bad = [i for i in indices if not 0 <= int(i) < n]
        if bad:
            raise IndexError(f"indices {bad[:5]} out of range for a dataset of {n}")
        self.parent = parent
        self.indices = [int(i) for i in indices]
        self.records = [parent.records[i] for i in self.indices]
        self.formatter = parent.formatter

    def image_bytes(self, index: int) -> bytes:
        return self.parent.image_bytes(self.indices[index])

    def load_image(self, index: int) -> bytes | Image.Image:
        return self.parent.load_image(self.indices[index])


class DecodedCache(ImageDataset):
    """Decode each image once, shrink it so its shorter side is `shorter_side`, keep it in memory.

    For small-image training on CPUs, where decoding a 512 px PNG costs more than the model step.
    Copies made by `with_format` share the cache, so training and evaluation transforms reuse it.
    `Resize(shorter_side)` on a cached image is a no-op, so an evaluation transform that starts with it
    gives exactly what it gives on the original. Call `fill()` before forking DataLoader workers
    (a cache filled inside a worker dies with it). Memory: about 3 * side^2 bytes per square image.
    """

    def __init__(self, parent: ImageDataset, shorter_side: int) -> None:
        self.parent = parent
        self.records = parent.records
        self.formatter = parent.formatter
        self.shorter_side = shorter_side
        self._images: dict[int, Image.Image] = {}

    def image_bytes(self, index: int) -> bytes:
        return self.parent.image_bytes(index)

    def load_image(self, index: int) -> Image.Image:
        img = self._images.get(index)
        if img is None:
            data = self.parent.load_image(index)
            img = decode_image(data) if not isinstance(data, Image.Image) else data
            img = Resize(self.shorter_side)(img)
            self._images[index] = img
        return img

    def fill(self) -> DecodedCache:
        for i in range(len(self)):
            self.load_image(i)
        return self


def _selection_from(kwargs: dict[str, Any], selection: Selection | None) -> Selection:
    return make_selection(
        selection,
        include_dropped=kwargs.get("include_dropped"),
        where=kwargs.get("where"),
        min_scores=kwargs.get("min_scores"),
        max_scores=kwargs.get("max_scores"),
        predicate=kwargs.get("predicate"),
    )


class RunDataset(ImageDataset):
    """Map-style dataset of a run's selected rows (kept, status "ok" by default).

    Image bytes are read per row group (the image column only) and the last `cache_row_groups` row
    groups are kept per process, so sequential or row-group-ordered access reads each row group once.
    For random access over a large run, `preload()` (or `cache_row_groups=None`) holds every selected
    row group's bytes in Arrow memory, which forked DataLoader workers share without copying.
    """

    def __init__(
        self,
        run: str | os.PathLike | Run,
        *,
        selection: Selection | None = None,
        include_dropped: bool | None = None,
        where: Mapping[str, Any] | None = None,
        min_scores: Mapping[str, float] | None = None,
        max_scores: Mapping[str, float] | None = None,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        label_map: LabelMap | Mapping[str, int] | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        output: OutputMode = "tuple",
        image_format: ImageFormat = "pil",
        metadata_columns: Sequence[str] | Literal["all"] = (),
        io: IoMode = "auto",
        cache_row_groups: int | None = 4,
        strict: bool = False,
        verify_images: bool = False,
    ) -> None:
        self.run = open_run(run, io=io, label_map=label_map, strict=strict, verify_images=verify_images)
        self.selection = _selection_from(
            dict(
                include_dropped=include_dropped,
                where=where,
                min_scores=min_scores,
                max_scores=max_scores,
                predicate=predicate,
            ),
            selection,
        )
        self.index: RowIndex = self.run.select(self.selection)
        self.records = self.index.records
        self.formatter = SampleFormatter(
            self.run.label_map,
            transform=transform,
            output=output,
            image_format=image_format,
            metadata_columns=metadata_columns,
        )
        self.cache_row_groups = cache_row_groups
        # forked DataLoader workers inherit this cache (a preloaded one is shared, read-only, by all)
        self._cache: OrderedDict[tuple[str, int], pa.Array] = OrderedDict()
        self._accesses = self._misses = 0
        self._warned = False

    def _column(self, shard_id: str, row_group: int) -> pa.Array:
        key = (shard_id, row_group)
        col = self._cache.get(key)
        self._accesses += 1
        if col is not None:
            self._cache.move_to_end(key)
            return col
        self._misses += 1
        if self._accesses >= 256 and self._misses > self._accesses // 2 and not self._warned:
            self._warned = True
            log.warning(
                "%s: %d of %d image reads missed the row-group cache (random access reads a whole row "
                "group per image); call preload(), raise cache_row_groups, or use RunIterableDataset",
                self.run.uri,
                self._misses,
                self._accesses,
            )
        col = self.run.read_image_column(shard_id, row_group)
        if self.cache_row_groups != 0:
            self._cache[key] = col
            if self.cache_row_groups is not None:
                while len(self._cache) > self.cache_row_groups:
                    self._cache.popitem(last=False)
        return col

    def image_bytes(self, index: int) -> bytes:
        shard_id, row_group, row = self.index.locations[index]
        return self._column(shard_id, row_group)[row].as_py()

    def preload(self) -> RunDataset:
        """Read every selected row group's image bytes now and keep them (no cache eviction)."""
        self.cache_row_groups = None
        for unit in self.index.units:
            key = (unit.shard_id, unit.row_group)
            if key not in self._cache:
                self._cache[key] = self.run.read_image_column(*key)
        return self


def distributed_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): explicit values, else torch.distributed when initialised, else RANK/WORLD_SIZE."""
    if rank is not None or world_size is not None:
        if rank is None or world_size is None:
            raise ConfigError("rank and world_size: give both or neither")
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        rank = int(os.environ.get("RANK", "0"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(
            f"rank/world_size: got rank={rank}, world_size={world_size}; need 0 <= rank < world_size"
        )
    return rank, world_size


@dataclass(frozen=True)
class WorkerShare:
    """The units one (rank, worker) reads, in order, and how many rows it yields at most."""

    units: tuple[Unit, ...]
    quota: int

    @property
    def rows(self) -> int:
        return sum(len(u) for u in self.units)


def _least_loaded(loads: list[int]) -> int:
    return min(range(len(loads)), key=lambda i: (loads[i], i))


def assign_units(
    units: Sequence[Unit],
    *,
    world_size: int,
    num_workers: int,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    equalize_ranks: bool = True,
) -> list[list[WorkerShare]]:
    """Split row-group units across ranks, then each rank's units across its DataLoader workers.

    Deterministic from (units, world_size, num_workers, shuffle, seed, epoch), so every process
    computes the same split without talking to the others. Units are visited in run order (or a
    permutation of it seeded by seed and epoch) and each goes to the least-loaded rank (ties: lowest
    rank), then likewise to the least-loaded worker of that rank. Every unit goes to exactly one
    worker: no duplicates, nothing missed.

    Uneven splits: rank totals differ by at most the largest unit. With ``equalize_ranks`` and more than
    one rank, every rank yields exactly the smallest rank total (a distributed training step needs the
    same number of batches on every rank); the surplus rows at the end of the bigger workers' streams
    are skipped this epoch (a different set when the order is shuffled per epoch). Without it, each
    rank yields all of its rows. A rank with no unit yields nothing: a run needs at least
    `world_size` row groups.
    """
    order = list(range(len(units)))
    if shuffle:
        order = [int(i) for i in np.random.default_rng([seed, epoch]).permutation(len(units))]
    rank_units: list[list[Unit]] = [[] for _ in range(world_size)]
    rank_loads = [0] * world_size
    for i in order:
        r = _least_loaded(rank_loads)
        rank_units[r].append(units[i])
        rank_loads[r] += len(units[i])
    target = min(rank_loads) if (equalize_ranks and world_size > 1) else None
    out: list[list[WorkerShare]] = []
    for r in range(world_size):
        worker_units: list[list[Unit]] = [[] for _ in range(num_workers)]
        loads = [0] * num_workers
        for u in rank_units[r]:
            w = _least_loaded(loads)
            worker_units[w].append(u)
            loads[w] += len(u)
        quotas = list(loads)
        if target is not None:
            excess = rank_loads[r] - target
            while excess > 0:  # trim one row at a time from the fullest worker (ties: the last one)
                w = max(range(num_workers), key=lambda i: (quotas[i], i))
                quotas[w] -= 1
                excess -= 1
        out.append([WorkerShare(tuple(worker_units[w]), quotas[w]) for w in range(num_workers)])
    return out


class RunIterableDataset(IterableDataset):
    """Streams a run's selected rows row group by row group, split across workers and ranks.

    `rank`/`world_size` come from the arguments, else torch.distributed, else RANK/WORLD_SIZE env.
    `shuffle=True` permutes the row groups per epoch (call `set_epoch` each epoch, with
    persistent_workers off so workers see it), shuffles rows inside each row group, and mixes
    neighbouring row groups through a `shuffle_buffer` of encoded rows (shards hold one manifest entry,
    hence one label, so without it a batch would be single-label).
    """

    def __init__(
        self,
        run: str | os.PathLike | Run,
        *,
        selection: Selection | None = None,
        include_dropped: bool | None = None,
        where: Mapping[str, Any] | None = None,
        min_scores: Mapping[str, float] | None = None,
        max_scores: Mapping[str, float] | None = None,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        label_map: LabelMap | Mapping[str, int] | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        output: OutputMode = "tuple",
        image_format: ImageFormat = "pil",
        metadata_columns: Sequence[str] | Literal["all"] = (),
        io: IoMode = "auto",
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer: int = 256,
        rank: int | None = None,
        world_size: int | None = None,
        equalize_ranks: bool = True,
        strict: bool = False,
        verify_images: bool = False,
    ) -> None:
        self.run = open_run(run, io=io, label_map=label_map, strict=strict, verify_images=verify_images)
        self.selection = _selection_from(
            dict(
                include_dropped=include_dropped,
                where=where,
                min_scores=min_scores,
                max_scores=max_scores,
                predicate=predicate,
            ),
            selection,
        )
        self.index = self.run.select(self.selection)
        self.formatter = SampleFormatter(
            self.run.label_map,
            transform=transform,
            output=output,
            image_format=image_format,
            metadata_columns=metadata_columns,
        )
        self.shuffle = shuffle
        self.seed = seed
        self.shuffle_buffer = max(1, shuffle_buffer)
        self.rank, self.world_size = distributed_info(rank, world_size)
        self.equalize_ranks = equalize_ranks
        self.epoch = 0
        self._unit_keys = {(u.shard_id, u.row_group): i for i, u in enumerate(self.index.units)}
        if len(self.index.units) < self.world_size:
            log.warning(
                "%s: %d row group(s) for %d ranks; some ranks get no data%s",
                self.run.uri,
                len(self.index.units),
                self.world_size,
                " and, with equalize_ranks, every rank yields nothing" if equalize_ranks else "",
            )

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.index.records

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def shares(self, num_workers: int = 1) -> list[WorkerShare]:
        """This rank's per-worker shares for the current epoch."""
        return assign_units(
            self.index.units,
            world_size=self.world_size,
            num_workers=num_workers,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=self.epoch,
            equalize_ranks=self.equalize_ranks,
        )[self.rank]

    def __len__(self) -> int:
        """Rows this rank yields this epoch (independent of the number of DataLoader workers)."""
        return sum(s.quota for s in self.shares(1))

    def _rows(self, share: WorkerShare, worker_id: int) -> Iterator[tuple[bytes, dict[str, Any]]]:
        for unit in share.units:
            col = self.run.read_image_column(unit.shard_id, unit.row_group)
            order = list(range(len(unit)))
            if self.shuffle:
                key = self._unit_keys[(unit.shard_id, unit.row_group)]
                order = [
                    int(i) for i in np.random.default_rng([self.seed, self.epoch, key, 7]).permutation(order)
                ]
            for i in order:
                yield col[unit.rows[i]].as_py(), self.index.records[unit.positions[i]]

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        share = self.shares(num_workers)[worker_id]
        rows = self._rows(share, worker_id)
        if self.shuffle and self.shuffle_buffer > 1:
            rows = _buffer_shuffle(
                rows,
                self.shuffle_buffer,
                np.random.default_rng([self.seed, self.epoch, self.rank, worker_id, 11]),
            )
        for n, (data, record) in enumerate(rows):
            if n >= share.quota:
                return
            yield self.formatter(data, record)


def _buffer_shuffle(items: Iterator[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Yield items in a locally shuffled order using a buffer of `size` (deterministic given `rng`)."""
    buf: list[Any] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = int(rng.integers(len(buf)))
        yield buf[j]
        buf[j] = item
    while buf:
        yield buf.pop(int(rng.integers(len(buf))))
