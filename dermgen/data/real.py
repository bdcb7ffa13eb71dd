"""Real images laid out ``<root>/<label>/*.png|jpg|jpeg`` (how ISIC / HAM10000 exports are usually arranged).

Label folder names go through the same `LabelMap` as generated runs (case-insensitive; aliases such as
"nevus"/"melanoma" when the map has them), so real and synthetic data share one Dataset interface and
one label space. Files are listed in sorted order, so indices are stable across machines.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from dermgen.data.labels import LabelMap, as_label_map
from dermgen.data.torch_dataset import ImageDataset, ImageFormat, OutputMode, SampleFormatter
from dermgen.errors import ConfigError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")


def scan_folder(
    root: str | os.PathLike,
    label_map: LabelMap | Mapping[str, int] | None = None,
    *,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    unknown: Literal["error", "skip"] = "error",
    recursive: bool = False,
) -> list[dict[str, Any]]:
    """One record per image: ``sample_id`` (path relative to root), ``label``, ``label_id``, ``path``,
    ``folder`` (the label folder's own name) and ``source`` (the root).

    Sub-folders whose name maps to no class raise ConfigError (``unknown="error"``) or are ignored
    (``unknown="skip"``). With ``recursive`` images in nested folders under a label folder count too.
    """
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise ConfigError(f"real image folder {str(root)!r} does not exist or is not a directory")
    lm = as_label_map(label_map)
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    records: list[dict[str, Any]] = []
    for folder in sorted(p for p in root_path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        name = lm.canonical(folder.name)
        if name is None:
            if unknown == "skip":
                continue
            known = list(lm.classes) + list(lm.aliases)
            raise ConfigError(
                f"{folder}: folder name {folder.name!r} maps to no class; expected one of {known} "
                "(case-insensitive), or pass unknown='skip'"
            )
        files = folder.rglob("*") if recursive else folder.iterdir()
        for f in sorted(files):
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in exts:
                records.append(
                    {
                        "sample_id": f.relative_to(root_path).as_posix(),
                        "label": name,
                        "label_id": lm.classes[name],
                        "folder": folder.name,
                        "path": str(f),
                        "source": str(root_path),
                    }
                )
    if not records:
        raise ConfigError(
            f"real image folder {str(root)!r} holds no {sorted(exts)} images under <label>/ sub-folders "
            f"(expected e.g. {root_path}/benign/x.png)"
        )
    return records


def split_folder(
    root: str | os.PathLike,
    output: str | os.PathLike,
    fractions: Mapping[str, float],
    *,
    seed: int = 0,
    label_map: LabelMap | Mapping[str, int] | None = None,
    mode: Literal["symlink", "copy"] = "symlink",
) -> dict[str, dict[str, int]]:
    """Split a ``<root>/<label>/`` folder into ``<output>/<split>/<label>/`` folders, stratified by label.

    `fractions` maps split names to shares (normalised to sum 1); each label's files are shuffled with
    `seed` and cut by largest remainder, so the split is deterministic. Returns counts per split and label.
    """
    import shutil

    from dermgen.data.mix import counts_for_ratios

    if not fractions:
        raise ConfigError("fractions: empty; expected e.g. {'train': 0.7, 'test': 0.3}")
    records = scan_folder(root, label_map)
    names = list(fractions)
    out_root = Path(output)
    counts: dict[str, dict[str, int]] = {n: {} for n in names}
    for label in sorted({r["label"] for r in records}):
        files = [r for r in records if r["label"] == label]
        order = np.random.default_rng([seed, len(files)]).permutation(len(files))
        sizes = counts_for_ratios([fractions[n] for n in names], len(files))
        start = 0
        for name, size in zip(names, sizes, strict=True):
            dest = out_root / name / label
            dest.mkdir(parents=True, exist_ok=True)
            for j in order[start : start + size]:
                src = Path(files[int(j)]["path"]).resolve()
                target = dest / src.name
                if target.exists() or target.is_symlink():
                    target.unlink()
                if mode == "symlink":
                    target.symlink_to(src)
                else:
                    shutil.copy2(src, target)
            counts[name][label] = size
            start += size
    return counts


class FolderDataset(ImageDataset):
    """Map-style dataset of a ``<root>/<label>/`` image folder, with the same outputs as `RunDataset`."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        label_map: LabelMap | Mapping[str, int] | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        output: OutputMode = "tuple",
        image_format: ImageFormat = "pil",
        metadata_columns: Sequence[str] | Literal["all"] = (),
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        unknown: Literal["error", "skip"] = "error",
        recursive: bool = False,
    ) -> None:
        self.root = Path(root).expanduser()
        lm = as_label_map(label_map)
        self.records = scan_folder(root, lm, extensions=extensions, unknown=unknown, recursive=recursive)
        self.formatter = SampleFormatter(
            lm,
            transform=transform,
            output=output,
            image_format=image_format,
            metadata_columns=metadata_columns,
        )

    def image_bytes(self, index: int) -> bytes:
        return Path(self.records[index]["path"]).read_bytes()
