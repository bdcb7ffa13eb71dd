"""Loading runs and real images for training: PyTorch datasets, mixing, Ray Data, distribution checks.

    from dermgen.data import RunDataset, RunIterableDataset, FolderDataset, mix_datasets
    ds = RunDataset("s3://bucket/derm-6k", where={"sampler": "Euler a"}, transform=eval_transform(224))

Ray Data (`dermgen.data.ray_data`) and FID/KID (`dermgen.data.distribution`) are imported on demand, so
importing this package never imports Ray. See docs/LOADING.md.
"""

from dermgen.data.labels import DERM_ALIASES, LabelMap
from dermgen.data.mix import MixedDataset, counts_for_ratios, mix_datasets
from dermgen.data.pack import pack_folder
from dermgen.data.real import FolderDataset, scan_folder, split_folder
from dermgen.data.runs import RowIndex, Run, Selection, Unit, make_selection, open_run
from dermgen.data.torch_dataset import (
    DecodedCache,
    ImageDataset,
    ImageSubset,
    RunDataset,
    RunIterableDataset,
    assign_units,
    decode_image,
    distributed_info,
)

__all__ = [
    "DERM_ALIASES",
    "DecodedCache",
    "FolderDataset",
    "ImageDataset",
    "ImageSubset",
    "LabelMap",
    "MixedDataset",
    "RowIndex",
    "Run",
    "RunDataset",
    "RunIterableDataset",
    "Selection",
    "Unit",
    "assign_units",
    "counts_for_ratios",
    "decode_image",
    "distributed_info",
    "make_selection",
    "mix_datasets",
    "open_run",
    "pack_folder",
    "scan_folder",
    "split_folder",
]
