"""scikit-learn's shipped digits images (8x8, 10 classes; no download): the embedded
default benchmark."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .registry import LoadedDataset, register

if TYPE_CHECKING:
    from ..config import Config


def load_digits_split(seed: int, test_fraction: float = 0.2) -> LoadedDataset:
    """1797 8x8 images normalised to [-1, 1]; per class a seeded ``test_fraction`` is test."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    labels = torch.tensor(data.target, dtype=torch.long)
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(data.target == c))
        cut = int(round(len(idx) * test_fraction))
        test_idx += idx[:cut].tolist()
        train_idx += idx[cut:].tolist()
    return LoadedDataset(TensorDataset(images[train_idx], labels[train_idx]),
                         TensorDataset(images[test_idx], labels[test_idx]),
                         [str(c) for c in range(10)], data.target[train_idx], data.target[test_idx])


@register("digits")
class Digits:
    img_size = 8

    def load(self, config: "Config") -> LoadedDataset:
        return load_digits_split(config.seed)
