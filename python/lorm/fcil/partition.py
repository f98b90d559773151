"""The class-incremental task split, the Dirichlet client partition and client sampling.

Everything here works on integer label arrays only; the inputs are never read. The
defaults follow fed-mammoth (docs/fidelity.md): classes in their natural order, one
categorical client draw per sample, redrawn until every client holds
``min_samples`` samples, and ``floor(fraction * N)`` clients per round.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

CLASS_ORDERS = ("natural", "shuffled")
PARTITIONS = ("per-sample", "proportional")
# fed-mammoth (_datasets/_utils.py BaseDataset._split_fcil) counts each draw and asserts
# the count is below 10000 before drawing: at most 9999 draws, then an AssertionError
MAX_TRIES = 9999


def split_classes(num_classes: int, num_tasks: int, seed: int,
                  last_task_classes: int | None = None, order: str = "natural") -> list[list[int]]:
    """Classes ``0..num_classes-1`` cut into tasks of equal size (or a given last task
    size): in label order (``"natural"``) or in a seeded permutation (``"shuffled"``)."""
    if order not in CLASS_ORDERS:
        raise ValueError(f"class_order must be one of {', '.join(CLASS_ORDERS)}, got {order!r}")
    classes = np.arange(num_classes) if order == "natural" else \
        np.random.default_rng(seed).permutation(num_classes)
    listed = classes.tolist()
    if last_task_classes is not None:
        head = num_classes - last_task_classes
        if num_tasks < 2 or head % (num_tasks - 1):
            raise ValueError(f"{num_classes} classes with a last task of {last_task_classes} "
                             f"do not split into {num_tasks} tasks")
        size = head // (num_tasks - 1)
        return [listed[i * size:(i + 1) * size] for i in range(num_tasks - 1)] + [listed[head:]]
    if num_classes % num_tasks:
        raise ValueError(f"{num_classes} classes do not split evenly into {num_tasks} tasks")
    size = num_classes // num_tasks
    return [listed[i * size:(i + 1) * size] for i in range(num_tasks)]


def _per_sample(idx: np.ndarray, num_clients: int, beta: float,
                rng: np.random.Generator) -> list[np.ndarray]:
    """fed-mammoth's draw: shares ~ Dirichlet(beta), then each sample's client ~ shares."""
    shares = rng.dirichlet(np.full(num_clients, beta))
    while np.isnan(shares).any():  # tiny betas can underflow every gamma draw to 0
        shares = rng.dirichlet(np.full(num_clients, beta))
    shares = np.where(shares < 1e-20, 0.0, shares)
    owner = rng.choice(num_clients, size=len(idx), p=shares / shares.sum())
    return [idx[owner == client] for client in range(num_clients)]


def _proportional(idx: np.ndarray, num_clients: int, beta: float,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """The class cut in Dirichlet(beta) proportions of a random permutation."""
    idx = rng.permutation(idx)
    shares = rng.dirichlet(np.full(num_clients, beta))
    cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
    return np.split(idx, cuts)


_SPLITTERS: dict[str, Callable[[np.ndarray, int, float, np.random.Generator], list[np.ndarray]]] = {
    "per-sample": _per_sample, "proportional": _proportional}


def dirichlet_partition(labels: np.ndarray, classes: list[int], num_clients: int, beta: float,
                        min_samples: int, rng: np.random.Generator, mode: str = "per-sample",
                        max_tries: int = MAX_TRIES) -> list[list[int]]:
    """Train indices of ``classes`` split over clients with label skew ``beta``.

    Per class (in the given order) ``mode`` splits its samples (``labels``: ``(n,)``
    ints): ``"per-sample"`` draws each sample's client from Dirichlet(beta) shares,
    ``"proportional"`` cuts the class in those shares. The whole task is redrawn until
    every client holds at least ``min_samples`` samples.

    Returns:
        ``[client]`` -> sorted indices into ``labels``.
    """
    if mode not in _SPLITTERS:
        raise ValueError(f"partition must be one of {', '.join(_SPLITTERS)}, got {mode!r}")
    split = _SPLITTERS[mode]
    for _ in range(max_tries):
        clients: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            for client, part in enumerate(split(np.flatnonzero(labels == c), num_clients, beta, rng)):
                clients[client] += part.tolist()
        if min(len(c) for c in clients) >= min_samples:
            return [sorted(c) for c in clients]
    total = int(sum((labels == c).sum() for c in classes))
    raise ValueError(f"could not give each of {num_clients} clients {min_samples} samples of "
                     f"{total} (beta = {beta}, {max_tries} draws); lower "
                     "min_samples_per_client or num_clients")


def participating(num_clients: int, fraction: float) -> int:
    """Clients per round: ``floor(fraction * num_clients)`` as fed-mammoth
    (utils/training.py, train); the config refuses settings where that is 0."""
    return num_clients if fraction >= 1.0 else int(fraction * num_clients)


def sample_clients(num_clients: int, fraction: float, seed: int, task: int, rnd: int) -> list[int]:
    """The clients of one round: all, or a seeded sample of ``participating(...)``."""
    count = participating(num_clients, fraction)
    if count == num_clients:
        return list(range(num_clients))
    if count < 1:
        raise ValueError(f"participation {fraction} of {num_clients} clients selects none "
                         "(floor(participation * num_clients) = 0)")
    rng = np.random.default_rng([seed, task, rnd, 7])
    return sorted(rng.choice(num_clients, size=count, replace=False).tolist())
