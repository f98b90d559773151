"""A smaller benchmark from a bigger dataset: the first classes of the label order and
the first samples of each class, so a CPU run or a test takes seconds. Samples left
out get label -1, which no task split or partition ever picks."""

from __future__ import annotations

import numpy as np


def cap_labels(labels: np.ndarray, num_classes: int, per_class: int | None) -> np.ndarray:
    """``labels`` ``(N,)`` with every sample of a class >= ``num_classes``, and every
    sample past the first ``per_class`` of its class (dataset order), set to -1."""
    out = np.where(labels < num_classes, labels, -1).astype(np.int64)
    if per_class is not None:
        for c in range(num_classes):
            out[np.flatnonzero(out == c)[per_class:]] = -1
    return out
