"""CIFAR-100 in the CIFAR site's 'python version' layout (torchvision's reader)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from . import LoadedDataset, register, require_root
from .transforms import default_image_transforms

if TYPE_CHECKING:
    from ..config import Config


@register("cifar100")
class Cifar100:
    img_size = None

    def load(self, config: "Config") -> LoadedDataset:
        from torchvision.datasets import CIFAR100

        root = require_root(config)
        folder = Path(root) / "cifar-100-python"
        if not config.download and not all((folder / f).is_file() for f in ("train", "test", "meta")):
            raise FileNotFoundError(
                f"CIFAR-100 not found under {root}: expected {folder}/train, test and meta (the "
                "'python version' archive from the CIFAR site, extracted into data_root), or pass "
                "run with --download on a machine with internet")
        train_tf, test_tf = default_image_transforms(config.img_size or 224)
        train = CIFAR100(root, train=True, transform=train_tf, download=config.download)
        test = CIFAR100(root, train=False, transform=test_tf, download=False)
        return LoadedDataset(train, test, list(train.classes), train.targets, test.targets)
