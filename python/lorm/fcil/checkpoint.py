"""Crash-safe checkpoints: tensors in safetensors, bookkeeping in JSON, never pickle.

Checkpoint ``k`` is the pair ``checkpoint-<k>.safetensors`` + ``checkpoint-<k>.json``;
``k`` grows by one with every save, so a save never writes a file that a committed
checkpoint points at. One save:

1. tensors -> ``checkpoint-<k>.safetensors.tmp``, renamed to ``checkpoint-<k>.safetensors``;
2. JSON (with the tensor file's sha256) -> ``checkpoint-<k>.json.tmp``, renamed to
   ``checkpoint-<k>.json``: the commit point;
3. every checkpoint older than the one before ``k`` is removed.

So the last committed checkpoint and the one before it are on disk at every moment.
:func:`load` takes the newest whole one (JSON parses, tensor file present with the
recorded sha256, safetensors loads), says on stderr which damaged ones it passed
over, and raises :class:`CheckpointError` when none is whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

NAME = re.compile(r"^checkpoint-(\d+)\.json$")
KEEP = 2  # the latest committed checkpoint and the one before it

# Called with the name of each save boundary; tests replace it to inject crashes.
fault_point: Callable[[str], None] = lambda boundary: None


class CheckpointError(ValueError):
    """No usable checkpoint: missing, damaged, or not a lorm run directory."""


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _numbers(run_dir: Path) -> list[int]:
    """Checkpoint numbers with a committed JSON, newest first."""
    found = (NAME.match(p.name) for p in Path(run_dir).iterdir()) if Path(run_dir).is_dir() else ()
    return sorted((int(m.group(1)) for m in found if m), reverse=True)


def _paths(run_dir: Path, number: int) -> tuple[Path, Path]:
    stem = Path(run_dir) / f"checkpoint-{number:06d}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save(run_dir: Path, tensors: dict[str, torch.Tensor], state: dict) -> int:
    """Commits a new checkpoint of ``tensors`` and the JSON-serialisable ``state``;
    returns its number."""
    run_dir = Path(run_dir)
    numbers = _numbers(run_dir)
    number = numbers[0] + 1 if numbers else 1
    tensor_path, json_path = _paths(run_dir, number)
    owned = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    fault_point("before tensors")
    blob = st_save(owned)
    _write_atomically(tensor_path, blob)
    fault_point("after tensors")
    record = {**state, "tensors": tensor_path.name, "sha256": hashlib.sha256(blob).hexdigest()}
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    fault_point("after json temp")
    os.replace(tmp, json_path)
    fault_point("after commit")
    for old in numbers[KEEP - 1:]:
        for path in _paths(run_dir, old):
            path.unlink(missing_ok=True)
    return number


def _read(run_dir: Path, number: int) -> tuple[dict[str, torch.Tensor], dict]:
    tensor_path, json_path = _paths(run_dir, number)
    try:
        state = json.loads(json_path.read_text())
        expected = state["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{json_path.name} is unreadable ({exc})") from None
    try:
        blob = tensor_path.read_bytes()
    except OSError:
        raise CheckpointError(f"{tensor_path.name} is missing") from None
    if hashlib.sha256(blob).hexdigest() != expected:
        raise CheckpointError(f"{tensor_path.name} does not match the sha256 recorded in "
                              f"{json_path.name} (truncated or changed on disk)")
    try:  # sorted: safetensors' in-memory loader does not promise an order
        return dict(sorted(st_load(blob).items())), state
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{tensor_path.name} is not a safetensors file ({exc})") from None


def load(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The newest whole checkpoint's tensors and state."""
    run_dir = Path(run_dir)
    numbers = _numbers(run_dir)
    if not numbers:
        raise CheckpointError(f"{run_dir} has no checkpoint-*.json: not a lorm run directory, "
                              "or it stopped before its first round finished")
    problems = []
    for number in numbers:
        try:
            loaded = _read(run_dir, number)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        for problem in problems:
            print(f"warning: {run_dir}: {problem}; resuming from checkpoint {number} instead",
                  file=sys.stderr)
        return loaded
    raise CheckpointError(f"{run_dir}: no whole checkpoint to resume from: " + "; ".join(problems))


def latest_state(run_dir: Path) -> dict:
    """The newest committed checkpoint's JSON state (no tensor check)."""
    numbers = _numbers(Path(run_dir))
    if not numbers:
        raise CheckpointError(f"{run_dir} has no checkpoint")
    return json.loads(_paths(run_dir, numbers[0])[1].read_text())
