"""The class-incremental task split, the Dirichlet client partition and client sampling.

Everything here works on integer label arrays only; the inputs are never read.
"""

from __future__ import annotations

import numpy as np


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


def sample_clients(num_clients: int, fraction: float, seed: int, task: int, rnd: int) -> list[int]:
    """The clients of one round: all, or a seeded sample of ``ceil(fraction * N)``."""
    if fraction >= 1.0:
        return list(range(num_clients))
    count = max(1, int(np.ceil(fraction * num_clients)))
    rng = np.random.default_rng([seed, task, rnd, 7])
    return sorted(rng.choice(num_clients, size=count, replace=False).tolist())
