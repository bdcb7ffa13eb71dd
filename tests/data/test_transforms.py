"""torchvision-style transforms on PIL / numpy / torch."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from dermgen.data import transforms as T


def _img(w=40, h=20) -> Image.Image:
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:, : w // 2] = 255  # left half white
    return Image.fromarray(arr)


def test_resize_shorter_side_and_exact():
    assert T.Resize(10)(_img()).size == (20, 10)
    assert T.Resize((8, 12))(_img()).size == (12, 8)


def test_center_crop_and_to_tensor():
    x = T.ToTensor()(T.CenterCrop(20)(_img()))
    assert x.shape == (3, 20, 20) and x.dtype == torch.float32
    assert float(x[:, :, 0].min()) == 1.0 and float(x[:, :, -1].max()) == 0.0
    assert T.PILToTensor()(_img()).dtype == torch.uint8


def test_normalize_and_flips():
    x = T.ToTensor()(_img())
    n = T.Normalize([0.5] * 3, [0.5] * 3)(x)
    assert float(n.min()) == -1.0 and float(n.max()) == 1.0
    flipped = T.RandomHorizontalFlip(p=1.0)(_img())
    assert np.asarray(flipped)[0, -1, 0] == 255 and np.asarray(flipped)[0, 0, 0] == 0
    assert torch.equal(T.RandomVerticalFlip(p=1.0)(x), x.flip(-2))
    assert T.RandomHorizontalFlip(p=0.0)(_img()) is not None


def test_random_resized_crop_is_seeded():
    torch.manual_seed(0)
    a = np.asarray(T.RandomResizedCrop(16, scale=(0.2, 0.5))(_img(64, 64)))
    torch.manual_seed(0)
    b = np.asarray(T.RandomResizedCrop(16, scale=(0.2, 0.5))(_img(64, 64)))
    assert a.shape == (16, 16, 3) and np.array_equal(a, b)


def test_eval_and_train_transforms_shape():
    img = _img(100, 80)
    assert T.eval_transform(32)(img).shape == (3, 32, 32)
    assert T.train_transform(32)(img).shape == (3, 32, 32)
