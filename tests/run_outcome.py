"""What a finished run leaves, and the rule for "the same run": identical accuracy
matrix, identical metrics.jsonl bytes and bit-identical final tensors."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lorm.fcil import checkpoint


def outcome(run_dir: Path) -> tuple:
    """(accuracy matrix, metrics.jsonl bytes, final tensors) of a finished run."""
    tensors, _ = checkpoint.load(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary["accuracy_matrix"], (run_dir / "metrics.jsonl").read_bytes(), tensors


def assert_same_outcome(a: tuple, b: tuple) -> None:
    assert a[0] == b[0]
    assert a[1] == b[1]
    assert a[2].keys() == b[2].keys()
    different = [k for k in a[2] if not torch.equal(a[2][k], b[2][k])]
    assert not different, f"{len(different)} of {len(a[2])} tensors differ, e.g. {different[:3]}"
