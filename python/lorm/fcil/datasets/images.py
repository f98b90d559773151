"""A dataset of image files with known labels: the readers' common output."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from torch.utils.data import Dataset


class ImageFiles(Dataset):
    """``(transform(RGB image), label)`` for each ``(path, label)``; images open lazily."""

    def __init__(self, paths: Sequence[Path], targets: Sequence[int], transform: Callable | None):
        if len(paths) != len(targets):
            raise ValueError(f"{len(paths)} image paths but {len(targets)} labels")
        self.paths, self.targets, self.transform = list(paths), [int(t) for t in targets], transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from PIL import Image

        with Image.open(self.paths[index]) as img:
            image = img.convert("RGB")
        return (self.transform(image) if self.transform else image), self.targets[index]


def require_files(name: str, layout: str, *paths: Path) -> None:
    """One FileNotFoundError naming the first missing path and the expected layout."""
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{name}: {path} is missing; expected layout: {layout} "
                                    "(docs/datasets.md)")


def check_images_exist(name: str, layout: str, paths: Sequence[Path], listed_in: Path) -> None:
    """Every image a split file lists must exist; the error names the first absent one."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{name}: {len(missing)} images listed in {listed_in} are "
                                f"missing, e.g. {missing[0]}; expected layout: {layout} "
                                "(docs/datasets.md)")
