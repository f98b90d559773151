"""``train/<class>/<image>`` and ``test/<class>/<image>`` folders: the generic
``image-folder`` dataset (under ``data_root``) and ImageNet-A (the authors' archive:
``data_root/imagenet-a/{train,test}``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .registry import LoadedDataset, register, require_root
from .images import ImageFiles
from .transforms import transforms_for

if TYPE_CHECKING:
    from ..config import Config


def load_image_folders(name: str, root: Path, recipe: str, config: "Config") -> LoadedDataset:
    """Train and test folders with the same class folders; labels in sorted folder order
    (torchvision's ImageFolder, as fed-mammoth's seq_imageneta.py MyImageNetA)."""
    from ...optional import import_vision

    ImageFolder = import_vision("torchvision.datasets", f"dataset {name!r}").ImageFolder

    layout = (f"{root}/train/<class>/<image> and {root}/test/<class>/<image> "
              "with the same class folders")
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"{name}: {root / split} is missing; expected layout: "
                                    f"{layout} (docs/datasets.md)")
    train, test = ImageFolder(str(root / "train")), ImageFolder(str(root / "test"))
    if train.classes != test.classes:
        raise ValueError(f"{name}: train and test class folders differ under {root}; "
                         f"expected layout: {layout}")
    train_tf, test_tf = transforms_for(recipe, config)
    return LoadedDataset(ImageFiles([Path(p) for p, _ in train.samples], train.targets, train_tf),
                         ImageFiles([Path(p) for p, _ in test.samples], test.targets, test_tf),
                         list(train.classes), train.targets, test.targets)


@register("image-folder")
class GenericImageFolder:
    img_size = None

    def load(self, config: "Config") -> LoadedDataset:
        return load_image_folders("image-folder", Path(require_root(config)), "default", config)


@register("imagenet-a")
class ImageNetA:
    img_size = None

    def load(self, config: "Config") -> LoadedDataset:
        root = Path(require_root(config)) / "imagenet-a"
        return load_image_folders("imagenet-a", root, "imagenet-a", config)
