"""``root/train/<class>/<image>`` and ``root/test/<class>/<image>`` folders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from . import LoadedDataset, add_reader, require_root
from .transforms import default_image_transforms

if TYPE_CHECKING:
    from ..config import Config


def load_image_folders(name: str, root: str, img_size: int) -> LoadedDataset:
    """Train and test folders with the same class folders, labels in sorted folder order."""
    from torchvision.datasets import ImageFolder

    layout = (f"expected {root}/train/<class>/<image> and {root}/test/<class>/<image> "
              "with the same class folders (docs/datasets.md)")
    for split in ("train", "test"):
        if not (Path(root) / split).is_dir():
            raise FileNotFoundError(f"{name}: {Path(root) / split} is missing; {layout}")
    train_tf, test_tf = default_image_transforms(img_size)
    train = ImageFolder(str(Path(root) / "train"), transform=train_tf)
    test = ImageFolder(str(Path(root) / "test"), transform=test_tf)
    if train.classes != test.classes:
        raise ValueError(f"{name}: train and test class folders differ under {root}; {layout}")
    return LoadedDataset(train, test, list(train.classes), train.targets, test.targets)


class ImageFolderReader:
    img_size = None

    def __init__(self, name: str) -> None:
        self.name = name

    def load(self, config: "Config") -> LoadedDataset:
        return load_image_folders(self.name, require_root(config), config.img_size or 224)


for _name in ("image-folder", "imagenet-r", "imagenet-a", "cub200", "cars196", "eurosat"):
    add_reader(_name, ImageFolderReader(_name))
