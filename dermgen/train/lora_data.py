"""Training data of the LoRA job and its determinism: which images, flips and seeds each micro-batch uses.

Batch composition, flips, timesteps and noise are pure functions of (seed, micro-batch, slot in the global
batch), which makes resuming exact and N workers with batch B follow the run of one worker with batch N*B.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from dermgen.errors import DermgenError
from dermgen.preprocess import ImageSource, load_rgb, resize_center_crop


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from the sha256 of the parts: stable across processes, machines and resumes."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled order of the n training images in one epoch (same on every rank)."""
    return np.random.default_rng(derived_seed(seed, "order", epoch)).permutation(n)


@dataclass(frozen=True)
class Layout:
    """How optimizer steps map onto micro-batches and images: rank r of W takes slots [r*B, (r+1)*B)."""

    n_images: int
    batch_size: int
    world: int
    accumulation: int

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world

    @property
    def micro_per_epoch(self) -> int:
        return self.n_images // self.global_batch

    def position(self, micro: int) -> tuple[int, int]:
        """(epoch, position within the epoch) of a global micro-batch index."""
        return divmod(micro, self.micro_per_epoch)

    def indices(self, seed: int, micro: int, rank: int) -> list[int]:
        epoch, pos = self.position(micro)
        order = epoch_order(seed, epoch, self.n_images)
        start = pos * self.global_batch + rank * self.batch_size
        return [int(i) for i in order[start : start + self.batch_size]]


def rng_states() -> dict[str, Any]:
    import torch

    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- data -------------------------------------------------------------------------------------------


def prompt_for(template: str, label: str) -> str:
    """The prompt of a label: '{label} mole' -> 'benign mole' (underscores in folder names become spaces)."""
    return template.format(label=label.replace("_", " ")).strip()


class ImageBank:
    """Training images decoded and resized on demand, kept in RAM up to a byte budget, prefetched on a thread."""

    def __init__(self, sources: Sequence[ImageSource], resolution: int, cache_limit_mb: int) -> None:
        self.sources = list(sources)
        self.resolution = resolution
        per_image = resolution * resolution * 3
        self.cache_enabled = per_image * len(self.sources) <= cache_limit_mb * 1024 * 1024
        self._cache: dict[int, np.ndarray] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dermgen-data")
        self._pending: dict[tuple, Future] = {}

    def __len__(self) -> int:
        return len(self.sources)

    def image(self, i: int) -> np.ndarray:
        img = self._cache.get(i)
        if img is None:
            src = self.sources[i]
            try:
                img = resize_center_crop(load_rgb(src.read()), self.resolution)
            except Exception as exc:
                raise DermgenError(f"--data: cannot read training image {src.origin!r}: {exc}") from exc
            if self.cache_enabled:
                self._cache[i] = img
        return img

    def batch(self, indices: Sequence[int], flips: Sequence[bool]) -> np.ndarray:
        """uint8 [n, H, W, 3] with the requested horizontal flips."""
        imgs = [self.image(i)[:, ::-1] if f else self.image(i) for i, f in zip(indices, flips, strict=True)]
        return np.stack(imgs)

    def prefetch(self, indices: Sequence[int], flips: Sequence[bool]) -> None:
        key = (tuple(indices), tuple(flips))
        if key not in self._pending:
            self._pending[key] = self._pool.submit(self.batch, indices, flips)

    def get(self, indices: Sequence[int], flips: Sequence[bool]) -> np.ndarray:
        fut = self._pending.pop((tuple(indices), tuple(flips)), None)
        return fut.result() if fut is not None else self.batch(indices, flips)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# -- the job ------------------------------------------------------------------------------------------
