"""A dataset (from the registry in ``datasets/``) cut into tasks and clients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from .config import Config
from .datasets import load_dataset
from .partition import dirichlet_partition, split_classes
from .subset import cap_labels


@dataclass
class Benchmark:
    """A dataset cut into tasks and clients.

    Attributes:
        train, test: datasets yielding ``(input, label)``.
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


def build_benchmark(config: Config) -> Benchmark:
    data = load_dataset(config)
    num_classes = min(data.num_classes, config.max_classes or data.num_classes)
    train_targets = cap_labels(data.train_targets, num_classes, config.max_train_per_class)
    test_targets = cap_labels(data.test_targets, num_classes, config.max_test_per_class)
    tasks = split_classes(num_classes, config.num_tasks, config.seed, config.last_task_classes,
                          config.class_order)
    rng = np.random.default_rng(config.seed + 1)
    clients = [dirichlet_partition(train_targets, classes, config.num_clients, config.beta,
                                   config.min_samples_per_client, rng, config.partition)
               for classes in tasks]
    tests = [np.flatnonzero(np.isin(test_targets, classes)).tolist() for classes in tasks]
    return Benchmark(data.train, data.test, num_classes, tasks, clients, tests)
