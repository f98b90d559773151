"""Fashion-MNIST from its IDX files (60k train / 10k test, 28x28, 10 classes), read
offline: from the Debian package ``dataset-fashion-mnist`` or from a folder the user
names (plain or gzipped IDX files, flat or in torchvision's ``FashionMNIST/raw`` layout).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from .registry import LoadedDataset, register

if TYPE_CHECKING:
    from ..config import Config

DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot")
UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally ``.gz``) of unsigned bytes as an array of its shape.

    Raises:
        ValueError: wrong magic number, or a file shorter/longer than its header says.
    """
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != UBYTE or not 1 <= raw[3] <= 4:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()}, "
                         "expected 000008 followed by the number of dimensions)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise ValueError(f"{path}: {len(raw)} bytes, but its header {shape} says {expected}: "
                         "the file is truncated or damaged")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder: Path, name: str) -> Path | None:
    for sub in (folder, folder / "FashionMNIST" / "raw", folder / "raw"):
        for candidate in (sub / name, sub / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def locate(root: str | Path | None) -> dict[str, tuple[Path, Path]]:
    """The four IDX files under ``root`` (or the Debian package's folder)."""
    folder = Path(root) if root is not None else DEBIAN_FOLDER
    found = {split: tuple(_find(folder, name) for name in names) for split, names in FILES.items()}
    missing = [name for split, names in FILES.items() for name, path in zip(names, found[split])
               if path is None]
    if missing:
        where = f"under {folder}" if root is not None else f"in {DEBIAN_FOLDER}"
        raise FileNotFoundError(
            f"Fashion-MNIST not found {where} (missing {', '.join(missing)}): install it with "
            "`apt-get install dataset-fashion-mnist`, or pass --data-root with the IDX files "
            "(plain or .gz, directly or in torchvision's FashionMNIST/raw/ layout)")
    return found  # type: ignore[return-value]


def to_model_input(images: np.ndarray, img_size: int) -> torch.Tensor:
    """``(n, 28, 28)`` bytes -> ``(n, 1, img_size, img_size)`` float32 in [-1, 1]; smaller
    sizes average whole pixels (area interpolation), as the 8x8 digits were made."""
    x = torch.from_numpy(images.copy()).float().unsqueeze(1) / 127.5 - 1.0
    if img_size != x.shape[-1]:
        x = F.interpolate(x, size=(img_size, img_size), mode="area")
    return x


def load(root: str | Path | None, img_size: int) -> tuple[TensorDataset, TensorDataset, int]:
    """Train and test sets as ``(image, label)`` datasets with 10 classes."""
    out = []
    for split, (images_path, labels_path) in locate(root).items():
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{images_path} / {labels_path}: expected (n, 28, 28) images and "
                             f"(n,) labels, got {images.shape} and {labels.shape}")
        out.append(TensorDataset(to_model_input(images, img_size),
                                 torch.from_numpy(labels.astype(np.int64))))
    return out[0], out[1], len(CLASSES)


@register("fashion-mnist")
class FashionMNIST:
    img_size = 8

    def load(self, config: "Config") -> LoadedDataset:
        """data_root None: the Debian package's files."""
        train, test, _ = load(config.data_root, config.img_size or self.img_size)
        return LoadedDataset(train, test, list(CLASSES), train.tensors[1].numpy(),
                             test.tensors[1].numpy())
