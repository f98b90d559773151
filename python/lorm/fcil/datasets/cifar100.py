"""CIFAR-100 in the CIFAR site's 'python version' layout: ``cifar-100-python/{train,
test,meta}`` pickles (what torchvision's CIFAR100 reads; fed-mammoth seq_cifar100.py)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch.utils.data import Dataset

from .registry import LoadedDataset, download_if_asked, register, require_root
from .transforms import transforms_for

if TYPE_CHECKING:
    from ..config import Config

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
MD5 = "eb9058c3a382ffc7106e4002c42a8d85"  # torchvision's CIFAR100.tgz_md5
LAYOUT = ("<data_root>/cifar-100-python/{train,test,meta} (the 'python version' archive, "
          "extracted; or run with --download)")


class CifarImages(Dataset):
    """``(transform(PIL image), label)`` over ``(n, 32, 32, 3)`` uint8 images."""

    def __init__(self, images: np.ndarray, targets: list[int], transform):
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[index])), self.targets[index]


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ValueError(f"cifar100: {path} is not a CIFAR pickle ({exc}); expected layout: "
                         f"{LAYOUT}") from None


def read_split(path: Path) -> tuple[np.ndarray, list[int]]:
    """Images ``(n, 32, 32, 3)`` uint8 and fine labels of one pickle."""
    entry = _unpickle(path)
    try:
        images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = [int(y) for y in entry["fine_labels"]]
    except (KeyError, ValueError) as exc:
        raise ValueError(f"cifar100: {path} lacks 'data' (n x 3072 bytes) or 'fine_labels' "
                         f"({exc}); expected layout: {LAYOUT}") from None
    if len(images) != len(labels):
        raise ValueError(f"cifar100: {path} has {len(images)} images and {len(labels)} labels")
    return np.ascontiguousarray(images), labels


@register("cifar100")
class Cifar100:
    img_size = None

    def load(self, config: "Config") -> LoadedDataset:
        root = require_root(config)
        folder = Path(root) / "cifar-100-python"
        download_if_asked(config.download, folder / "meta", URL, Path(root),
                          filename="cifar-100-python.tar.gz", md5=MD5)
        for name in ("train", "test", "meta"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"cifar100: {folder / name} is missing; expected layout: "
                                        f"{LAYOUT} (docs/datasets.md)")
        (train_x, train_y), (test_x, test_y) = read_split(folder / "train"), read_split(folder / "test")
        names = _unpickle(folder / "meta").get("fine_label_names")
        if not isinstance(names, list) or len(names) != 100:
            raise ValueError(f"cifar100: {folder / 'meta'} lacks the 100 'fine_label_names'")
        train_tf, test_tf = transforms_for("default", config)
        return LoadedDataset(CifarImages(train_x, train_y, train_tf),
                             CifarImages(test_x, test_y, test_tf), names, train_y, test_y)
