"""Datasets, the class-incremental task split and the Dirichlet client partition.

The embedded default is scikit-learn's shipped digits images (8x8, 10 classes; no
download). Real datasets are read from folders the user names (docs/datasets.md);
a missing or malformed folder is an error that says which path and what layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from . import fashion_mnist
from .config import Config
from .subset import cap_labels

IMAGEFOLDER_DATASETS = ("imagenet-r", "imagenet-a", "cub200", "cars196", "eurosat")


@dataclass
class Benchmark:
    """A dataset cut into tasks and clients.

    Attributes:
        train, test: datasets yielding ``(image, label)``.
        num_classes: classes of the whole benchmark (the head's width).
        task_classes: per task, its classes (original label ids) in order.
        client_indices: ``[task][client]`` -> train indices of that client.
        test_indices: ``[task]`` -> test indices of that task's classes.
    """

    train: Dataset
    test: Dataset
    num_classes: int
    task_classes: list[list[int]]
    client_indices: list[list[list[int]]]
    test_indices: list[list[int]]


def digits(seed: int, test_fraction: float = 0.2) -> tuple[Dataset, Dataset, int]:
    """scikit-learn's digits: 1797 8x8 images, normalised to [-1, 1], split per class."""
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
    return (TensorDataset(images[train_idx], labels[train_idx]),
            TensorDataset(images[test_idx], labels[test_idx]), 10)


def _targets(dataset: Dataset) -> np.ndarray:
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].numpy()
    return np.asarray(dataset.targets)


def _image_transforms(img_size: int):
    from torchvision import transforms

    normalize = transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    train = transforms.Compose([transforms.RandomResizedCrop(img_size), transforms.RandomHorizontalFlip(),
                                transforms.ToTensor(), normalize])
    test = transforms.Compose([transforms.Resize(int(img_size * 256 / 224)),
                               transforms.CenterCrop(img_size), transforms.ToTensor(), normalize])
    return train, test


def cifar100(root: str, img_size: int, download: bool) -> tuple[Dataset, Dataset, int]:
    from torchvision.datasets import CIFAR100

    folder = Path(root) / "cifar-100-python"
    if not download and not all((folder / f).is_file() for f in ("train", "test", "meta")):
        raise FileNotFoundError(
            f"CIFAR-100 not found under {root}: expected {folder}/train, test and meta (the "
            "'python version' archive from the CIFAR site, extracted into data_root), or pass "
            "run with --download on a machine with internet")
    train_tf, test_tf = _image_transforms(img_size)
    return (CIFAR100(root, train=True, transform=train_tf, download=download),
            CIFAR100(root, train=False, transform=test_tf, download=False), 100)


def image_folder(name: str, root: str, img_size: int) -> tuple[Dataset, Dataset, int]:
    """``root/train/<class>/*.jpg`` and ``root/test/<class>/*.jpg`` with the same classes."""
    from torchvision.datasets import ImageFolder

    layout = (f"expected {root}/train/<class>/<image> and {root}/test/<class>/<image> "
              "with the same class folders (docs/datasets.md)")
    for split in ("train", "test"):
        if not (Path(root) / split).is_dir():
            raise FileNotFoundError(f"{name}: {Path(root) / split} is missing; {layout}")
    train_tf, test_tf = _image_transforms(img_size)
    train = ImageFolder(str(Path(root) / "train"), transform=train_tf)
    test = ImageFolder(str(Path(root) / "test"), transform=test_tf)
    if train.classes != test.classes:
        raise ValueError(f"{name}: train and test class folders differ under {root}; {layout}")
    return train, test, len(train.classes)


def load_datasets(config: Config) -> tuple[Dataset, Dataset, int]:
    if config.dataset == "clinc150":
        from .datasets import clinc150
        train, test, intents = clinc150.load(config)
        return train, test, len(intents)
    if config.dataset == "digits":
        return digits(config.seed)
    if config.dataset == "fashion-mnist":  # data_root None: the Debian package's files
        return fashion_mnist.load(config.data_root, config.img_size or 8)
    if config.data_root is None:
        raise FileNotFoundError(f"dataset {config.dataset!r} needs --set data_root=<folder> "
                                "(layouts: docs/datasets.md)")
    img_size = config.img_size or 224
    if config.dataset == "cifar100":
        return cifar100(config.data_root, img_size, config.download)
    return image_folder(config.dataset, config.data_root, img_size)


def split_classes(num_classes: int, num_tasks: int, seed: int | None,
                  last_task_classes: int | None = None) -> list[list[int]]:
    """A seeded class order (``seed`` None: label order) cut into tasks of equal size
    (or a given last task size)."""
    order = (list(range(num_classes)) if seed is None
             else np.random.default_rng(seed).permutation(num_classes).tolist())
    if last_task_classes is not None:
        head = num_classes - last_task_classes
        if num_tasks < 2 or head % (num_tasks - 1):
            raise ValueError(f"{num_classes} classes with a last task of {last_task_classes} "
                             f"do not split into {num_tasks} tasks")
        size = head // (num_tasks - 1)
        return [order[i * size:(i + 1) * size] for i in range(num_tasks - 1)] + [order[head:]]
    if num_classes % num_tasks:
        raise ValueError(f"{num_classes} classes do not split evenly into {num_tasks} tasks")
    size = num_classes // num_tasks
    return [order[i * size:(i + 1) * size] for i in range(num_tasks)]


def dirichlet_partition(labels: np.ndarray, classes: list[int], num_clients: int, beta: float,
                        min_samples: int, rng: np.random.Generator,
                        max_tries: int = 1000) -> list[list[int]]:
    """Per class, shares ~ Dirichlet(beta) over clients; redrawn until every client
    holds at least ``min_samples`` samples of these classes."""
    for _ in range(max_tries):
        clients: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(num_clients, beta))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for client, part in enumerate(np.split(idx, cuts)):
                clients[client] += part.tolist()
        if min(len(c) for c in clients) >= min_samples:
            return [sorted(c) for c in clients]
    total = int(sum((labels == c).sum() for c in classes))
    raise ValueError(f"could not give each of {num_clients} clients {min_samples} samples of "
                     f"{total} (beta = {beta}); lower min_samples_per_client or num_clients")


def build_benchmark(config: Config) -> Benchmark:
    train, test, num_classes = load_datasets(config)
    num_classes = min(num_classes, config.max_classes or num_classes)
    # CLINC150's tasks take the intents in label order (fed-mammoth _split_fcil_OOS)
    order_seed = None if config.dataset == "clinc150" else config.seed
    tasks = split_classes(num_classes, config.num_tasks, order_seed, config.last_task_classes)
    train_labels = cap_labels(_targets(train), num_classes, config.max_train_per_class)
    test_labels = cap_labels(_targets(test), num_classes, config.max_test_per_class)
    rng = np.random.default_rng(config.seed + 1)
    clients = [dirichlet_partition(train_labels, classes, config.num_clients, config.beta,
                                   config.min_samples_per_client, rng) for classes in tasks]
    tests = [np.flatnonzero(np.isin(test_labels, classes)).tolist() for classes in tasks]
    return Benchmark(train, test, num_classes, tasks, clients, tests)


def sample_clients(num_clients: int, fraction: float, seed: int, task: int, rnd: int) -> list[int]:
    """The clients of one round: all, or a seeded sample of ``ceil(fraction * N)``."""
    if fraction >= 1.0:
        return list(range(num_clients))
    count = max(1, int(np.ceil(fraction * num_clients)))
    rng = np.random.default_rng([seed, task, rnd, 7])
    return sorted(rng.choice(num_clients, size=count, replace=False).tolist())
