"""The dataset registry itself: :class:`LoadedDataset`, the reader protocol, the
``register`` decorator and the helpers readers share (``require_root``,
``download_if_asked``). Reader modules import from here; the package's ``__init__``
re-exports it and imports every reader (docs/datasets.md)."""


from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np
from torch.utils.data import Dataset

from ...backbones.base import img_size_for, set_dataset_img_size

if TYPE_CHECKING:
    from ..config import Config


@dataclass
class LoadedDataset:
    """A dataset's train and test splits.

    Attributes:
        train, test: datasets yielding ``(input, label)`` with integer labels in
            ``[0, num_classes)``.
        class_names: ``num_classes`` names, indexed by label.
        train_targets, test_targets: ``(len(train),)`` / ``(len(test),)`` int64 labels,
            so the task split and the partition never iterate the data.
    """

    train: Dataset
    test: Dataset
    class_names: list[str]
    train_targets: np.ndarray
    test_targets: np.ndarray

    def __post_init__(self) -> None:
        self.train_targets = np.asarray(self.train_targets, dtype=np.int64)
        self.test_targets = np.asarray(self.test_targets, dtype=np.int64)
        for split, data, targets in (("train", self.train, self.train_targets),
                                     ("test", self.test, self.test_targets)):
            if targets.ndim != 1 or len(targets) != len(data):  # type: ignore[arg-type]
                raise ValueError(f"{split} targets have shape {targets.shape}, expected "
                                 f"({len(data)},) (one label per sample)")  # type: ignore[arg-type]
            if len(targets) and not 0 <= targets.min() <= targets.max() < self.num_classes:
                raise ValueError(f"{split} labels span [{targets.min()}, {targets.max()}], "
                                 f"outside [0, {self.num_classes}) given by class_names")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class DatasetReader(Protocol):
    """Reads one on-disk format. ``img_size``: the model's default input side for this
    dataset (``None``: the backbone's own)."""

    img_size: int | None

    def load(self, config: "Config") -> LoadedDataset: ...


READERS: dict[str, DatasetReader] = {}


def add_reader(name: str, reader_object: DatasetReader) -> None:
    """Registers ``reader_object`` as the reader of dataset ``name``."""
    if name in READERS:
        raise ValueError(f"dataset {name!r} is registered twice")
    READERS[name] = reader_object


def register(name: str) -> Callable[[type], type]:
    """Class decorator: registers an instance of the class (built without arguments)."""
    def wrap(cls: type) -> type:
        add_reader(name, cls())
        return cls
    return wrap


def dataset_names() -> tuple[str, ...]:
    return tuple(READERS)


def reader(name: str) -> DatasetReader:
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}: one of {', '.join(READERS)}")
    return READERS[name]


def load_dataset(config: "Config") -> LoadedDataset:
    """The train/test splits of ``config.dataset``, read from ``config.data_root``."""
    return reader(config.dataset).load(config)


def default_img_size(config: "Config") -> int | None:
    """``config.img_size``, else the dataset's default (``None``: the backbone's own);
    the rule is :func:`lorm.backbones.base.img_size_for`, which asks this registry."""
    return img_size_for(config)


# the backbones learn a dataset's native image size from here, not by importing this package
set_dataset_img_size(lambda name: reader(name).img_size)


def require_root(config: "Config") -> str:
    """``config.data_root``, or an error naming the dataset and where layouts are shown."""
    if config.data_root is None:
        raise FileNotFoundError(f"dataset {config.dataset!r} needs --set data_root=<folder> "
                                "(layouts: docs/datasets.md)")
    return config.data_root


def download_if_asked(download: bool, present: Path, url: str, into: Path, *,
                      extract: bool = True, filename: str | None = None,
                      md5: str | None = None) -> None:
    """With ``--download`` and ``present`` absent: fetch ``url`` into ``into`` and, when
    ``extract``, unpack it there (torchvision's ``download_and_extract_archive`` /
    ``download_url``). Without ``--download`` nothing is fetched, ever."""
    if not download or present.exists():
        return
    from ...optional import import_vision

    utils = import_vision("torchvision.datasets.utils", f"--download of {url}")
    fetch = utils.download_and_extract_archive if extract else utils.download_url
    fetch(url, str(into), filename=filename, md5=md5)
