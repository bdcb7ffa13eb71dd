"""Image transforms in the torchvision style, built on PIL, numpy and torch only (torchvision is not used).

Same names and semantics as ``torchvision.transforms`` for the ones training code needs: `Compose`,
`Resize` (an int resizes the shorter side), `CenterCrop`, `RandomResizedCrop`, `RandomHorizontalFlip`,
`RandomVerticalFlip`, `ToTensor` (HWC uint8 -> CHW float in [0, 1]), `PILToTensor`, `Normalize`.
Random transforms draw from torch's RNG, which the DataLoader seeds per worker, so a seeded run
(``torch.manual_seed`` + a seeded DataLoader generator) is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)  # what transformers' MobileNetV2 / ViT (in21k) image processors use
HALF_STD = (0.5, 0.5, 0.5)

_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from an int or a (h, w) pair."""
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _as_pil(img: Any) -> Image.Image:
    if isinstance(img, Image.Image):
        return img
    if isinstance(img, np.ndarray):
        return Image.fromarray(img)
    raise TypeError(f"expected a PIL image or an HxWxC uint8 array, got {type(img).__name__}")


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, img: Any) -> Any:
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class Resize:
    """Resize a PIL image. An int resizes the shorter side to it (aspect kept); a (h, w) pair is exact."""

    def __init__(self, size: int | Sequence[int], interpolation: str = "bilinear") -> None:
        if interpolation not in _INTERPOLATION:
            raise ValueError(f"interpolation: {interpolation!r} is not one of {list(_INTERPOLATION)}")
        self.size = size
        self.interpolation = interpolation

    def __call__(self, img: Any) -> Image.Image:
        img = _as_pil(img)
        w, h = img.size
        if isinstance(self.size, int):
            if w <= h:
                new_w, new_h = self.size, max(1, round(h * self.size / w))
            else:
                new_w, new_h = max(1, round(w * self.size / h)), self.size
        else:
            new_h, new_w = _size_pair(self.size)
        if (new_w, new_h) == (w, h):
            return img
        return img.resize((new_w, new_h), _INTERPOLATION[self.interpolation])

    def __repr__(self) -> str:
        return f"Resize({self.size}, {self.interpolation!r})"


class CenterCrop:
    """Crop the centre (h, w) of a PIL image (padding with black where the image is smaller)."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _size_pair(size)

    def __call__(self, img: Any) -> Image.Image:
        img = _as_pil(img)
        th, tw = self.size
        w, h = img.size
        left = int(round((w - tw) / 2.0))
        top = int(round((h - th) / 2.0))
        return img.crop((left, top, left + tw, top + th))

    def __repr__(self) -> str:
        return f"CenterCrop({self.size})"


class RandomResizedCrop:
    """torchvision's RandomResizedCrop: a random area/aspect crop resized to `size`."""

    def __init__(
        self,
        size: int | Sequence[int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "bilinear",
    ) -> None:
        self.size = _size_pair(size)
        self.scale = scale
        self.ratio = ratio
        self.interpolation = interpolation

    def _params(self, w: int, h: int) -> tuple[int, int, int, int]:
        area = w * h
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * float(torch.empty(1).uniform_(self.scale[0], self.scale[1]))
            aspect = math.exp(float(torch.empty(1).uniform_(*log_ratio)))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (1,)))
                left = int(torch.randint(0, w - cw + 1, (1,)))
                return top, left, ch, cw
        # fallback: the whole image, clamped to the ratio range
        in_ratio = w / h
        if in_ratio < self.ratio[0]:
            cw, ch = w, int(round(w / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            ch, cw = h, int(round(h * self.ratio[1]))
        else:
            cw, ch = w, h
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def __call__(self, img: Any) -> Image.Image:
        img = _as_pil(img)
        top, left, ch, cw = self._params(*img.size)
        th, tw = self.size
        return img.resize((tw, th), _INTERPOLATION[self.interpolation], box=(left, top, left + cw, top + ch))

    def __repr__(self) -> str:
        return f"RandomResizedCrop({self.size}, scale={self.scale}, ratio={self.ratio})"


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, img: Any) -> Any:
        if float(torch.rand(1)) < self.p:
            if isinstance(img, torch.Tensor):
                return img.flip(-1)
            return _as_pil(img).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return img

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomVerticalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, img: Any) -> Any:
        if float(torch.rand(1)) < self.p:
            if isinstance(img, torch.Tensor):
                return img.flip(-2)
            return _as_pil(img).transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        return img

    def __repr__(self) -> str:
        return f"RandomVerticalFlip(p={self.p})"


def pil_to_uint8_tensor(img: Any) -> torch.Tensor:
    """CHW uint8 tensor of a PIL image or HWC array (RGB; grayscale gets one channel)."""
    arr = img if isinstance(img, np.ndarray) else np.array(_as_pil(img))  # np.array: a writable copy
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


class PILToTensor:
    """PIL / HWC uint8 -> CHW uint8 tensor (no scaling)."""

    def __call__(self, img: Any) -> torch.Tensor:
        return pil_to_uint8_tensor(img)

    def __repr__(self) -> str:
        return "PILToTensor()"


class ToTensor:
    """PIL / HWC uint8 -> CHW float32 tensor in [0, 1]; tensors pass through (uint8 ones are scaled)."""

    def __call__(self, img: Any) -> torch.Tensor:
        if isinstance(img, torch.Tensor):
            return img.float().div_(255.0) if img.dtype == torch.uint8 else img
        return pil_to_uint8_tensor(img).float().div_(255.0)

    def __repr__(self) -> str:
        return "ToTensor()"


class Normalize:
    """(x - mean) / std per channel on a CHW (or NCHW) float tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if any(s == 0 for s in std):
            raise ValueError(f"std: {list(std)} contains 0")
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def eval_transform(
    image_size: int, mean: Sequence[float] = HALF_MEAN, std: Sequence[float] = HALF_STD
) -> Compose:
    """Resize the shorter side, centre-crop to `image_size`, tensor, normalise (deterministic)."""
    return Compose([Resize(image_size), CenterCrop(image_size), ToTensor(), Normalize(mean, std)])


def train_transform(
    image_size: int,
    mean: Sequence[float] = HALF_MEAN,
    std: Sequence[float] = HALF_STD,
    scale: tuple[float, float] = (0.6, 1.0),
) -> Compose:
    """Random crop (60-100% of the area), horizontal and vertical flips (lesions have no orientation)."""
    return Compose(
        [
            RandomResizedCrop(image_size, scale=scale),
            RandomHorizontalFlip(),
            RandomVerticalFlip(),
            ToTensor(),
            Normalize(mean, std),
        ]
    )
