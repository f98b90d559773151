"""What the Flower tests share: the tiny digits run both sides execute, and the rule
for "the same model" between a Flower run and `lorm run`."""

from __future__ import annotations

import torch

# 2 tasks of 2 classes, 2 rounds (B then A), 3 clients, a small share of digits
TINY = ["num_clients=3", "num_tasks=2", "max_classes=4", "max_train_per_class=30",
        "max_test_per_class=20", "rounds=2", "local_epochs=1", "batch_size=8",
        "lr_a=0.01", "lr_b=0.01", "lr_head=0.01", "num_threads=1"]
EPS32 = torch.finfo(torch.float32).eps


def assert_same_model(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    """Equal to float32 round-off: the sums of a round are added in arrival order, so
    they may differ in the last bit of float64 before the float32 cast (8 eps32 of each
    tensor's max |t|; 1e-12 of it for float64 tensors)."""
    assert ours.keys() == theirs.keys()
    for key, t in theirs.items():
        scale = max(float(t.abs().max()) if t.numel() else 0.0, 1e-30)
        tol = (8 * EPS32 if t.dtype == torch.float32 else 1e-12) * scale
        diff = (ours[key] - t).abs()
        assert (float(diff.max()) if diff.numel() else 0.0) <= tol, key
