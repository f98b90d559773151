"""Randomness owned by the run: every draw comes from a seed derived from the run's
seed and where the draw happens (task, round, client, pass), never from whatever state
torch's, numpy's or Python's global generators were left in.

Loaders take an explicit generator (:func:`make_loader`). Draws that cannot take one
(torchvision's random transforms, dropout inside a model) read the global generators,
so each step runs inside :func:`drawn_from`: the global generators are seeded from the
step's parts on entry and put back as they were on exit. A run therefore neither
depends on nor disturbs the caller's global random state.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

# The pass a draw belongs to: the last part of a step's seed.
TRAIN, STATS, TASK_END, EVAL, SETUP = 0, 1, 2, 3, 4
# Appended to a scope's parts, so its stream never equals a loader's shuffling stream
# drawn from the same parts.
_GLOBALS = 0x676C6F62


def derived_seed(parts: Sequence[int]) -> int:
    """A 63-bit seed that depends on every part (e.g. run seed, task, round, client)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> 1)


@contextlib.contextmanager
def drawn_from(parts: Sequence[int], device: torch.device | None = None) -> Iterator[None]:
    """A scope whose global random draws (torch CPU, ``device``'s CUDA generator, numpy,
    Python) depend only on ``parts``; every generator is restored on exit."""
    seed = derived_seed([*parts, _GLOBALS])
    cuda = [device] if device is not None and device.type == "cuda" else []
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=cuda):
            torch.random.default_generator.manual_seed(seed)
            for dev in cuda:
                with torch.cuda.device(dev):
                    torch.cuda.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def make_loader(dataset: Dataset, indices: list[int], batch_size: int, seed: Sequence[int],
                shuffle: bool = True) -> DataLoader:
    """A loader over ``indices`` whose shuffling depends only on ``seed`` (resumable).
    Items are read in the calling process (no workers), so a surrounding
    :func:`drawn_from` scope decides the transforms' draws."""
    gen = torch.Generator().manual_seed(derived_seed(seed))
    return DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=shuffle,
                      generator=gen, num_workers=0)
