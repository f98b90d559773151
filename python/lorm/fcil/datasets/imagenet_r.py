"""ImageNet-R: the official tree (``imagenet-r/<wnid>/<image>``) split by the authors'
``imagenet-r_train.yaml`` / ``imagenet-r_test.yaml`` (fed-mammoth seq_imagenetr.py
MyImageNetR), each ``{data: [image paths], targets: [labels]}``."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import yaml

from .registry import LoadedDataset, download_if_asked, register, require_root
from .images import ImageFiles, check_images_exist, require_files
from .transforms import transforms_for

if TYPE_CHECKING:
    from ..config import Config

NUM_CLASSES = 200
URL = "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar"
LAYOUT = ("<data_root>/imagenet-r/<wnid>/<image> (the official imagenet-r.tar, extracted) "
          "plus <data_root>/imagenet-r/imagenet-r_train.yaml and imagenet-r_test.yaml "
          "(the authors' split files; --download fetches the tree only)")


def resolve_listed(path: str, folder: Path) -> Path:
    """An image path as the split file lists it, re-rooted at ``folder``: the part after
    its last ``imagenet-r`` component, or else its last two parts (``<wnid>/<image>``)."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    tail = parts[len(parts) - parts[::-1].index("imagenet-r"):] if "imagenet-r" in parts \
        else parts[-2:]
    return folder.joinpath(*tail)


def read_split(split_file: Path, folder: Path) -> tuple[list[Path], list[int]]:
    """``(image paths, labels)`` listed by one of the authors' yaml split files."""
    try:
        spec = yaml.safe_load(split_file.read_text())
        data, targets = spec["data"], [int(t) for t in spec["targets"]]
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"imagenet-r: {split_file} is malformed ({type(exc).__name__}: {exc}); "
                         "expected a mapping with 'data' (image paths) and 'targets' (labels "
                         "0..199) of equal length") from None
    if len(data) != len(targets) or not all(0 <= t < NUM_CLASSES for t in targets):
        raise ValueError(f"imagenet-r: {split_file} lists {len(data)} images and "
                         f"{len(targets)} targets, which must be equal, with labels in 0..199")
    paths = [resolve_listed(str(p), folder) for p in data]
    check_images_exist("imagenet-r", LAYOUT, paths, split_file)
    return paths, targets


def class_names(paths: list[Path], targets: list[int]) -> list[str]:
    """Label -> its images' folder (the wnid); labels no image shows keep their number."""
    names = [str(c) for c in range(NUM_CLASSES)]
    for path, target in zip(paths, targets):
        names[target] = path.parent.name
    return names


@register("imagenet-r")
class ImageNetR:
    img_size = None

    def load(self, config: "Config") -> LoadedDataset:
        folder = Path(require_root(config)) / "imagenet-r"
        download_if_asked(config.download, folder, URL, folder.parent)  # not the split files
        files = [folder / "imagenet-r_train.yaml", folder / "imagenet-r_test.yaml"]
        require_files("imagenet-r", LAYOUT, folder, *files)
        (train_paths, train_y), (test_paths, test_y) = (read_split(f, folder) for f in files)
        train_tf, test_tf = transforms_for("default", config)
        return LoadedDataset(ImageFiles(train_paths, train_y, train_tf),
                             ImageFiles(test_paths, test_y, test_tf),
                             class_names(train_paths + test_paths, train_y + test_y),
                             train_y, test_y)
