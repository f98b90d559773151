"""Crash-safe checkpoints that cost what changed: tensors in safetensors parts,
bookkeeping in JSON, never pickle.

A run's state falls into parts that change at different rates (lorm.fcil.loop: a
``round`` part with the LoRA factors and the head, rewritten every round; a ``task``
part with the cross-task sums, rewritten only at a task's end). Checkpoint ``k`` is
``checkpoint-<k>.json``, which names one file per part with its sha256; a part that did
not change since the last save is not written again but named as it is
(``checkpoint-<j>-<part>.safetensors`` of an earlier save ``j``). ``k`` grows by one with
every save, so a save never writes a file that a committed checkpoint names. One save:

1. each changed part -> ``checkpoint-<k>-<part>.safetensors.tmp``, renamed without
   ``.tmp``;
2. JSON (every part's file and sha256) -> ``checkpoint-<k>.json.tmp``, renamed to
   ``checkpoint-<k>.json``: the commit point;
3. JSONs older than the one before ``k`` are removed, then every tensor file that
   neither kept JSON names.

So the last committed checkpoint and the one before it are whole on disk at every
moment. :func:`load` takes the newest whole one (JSON parses, every part present with
its recorded sha256, safetensors loads), says on stderr which damaged ones it passed
over, and raises :class:`CheckpointError` when none is whole. Checkpoints of one
tensor file (``"tensors"`` and ``"sha256"`` in the JSON, lorm before parts) still load.
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

# A part as a checkpoint names it: {"file": name in the run directory, "sha256": hex}.
PartRef = dict[str, str]

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


def _json_path(run_dir: Path, number: int) -> Path:
    return Path(run_dir) / f"checkpoint-{number:06d}.json"


def _part_path(run_dir: Path, number: int, part: str) -> Path:
    return Path(run_dir) / f"checkpoint-{number:06d}-{part}.safetensors"


def _parts_of(state: dict) -> dict[str, PartRef]:
    """The parts a checkpoint JSON names (one ``all`` part for the one-file format)."""
    if "parts" in state:
        return state["parts"]
    return {"all": {"file": state["tensors"], "sha256": state["sha256"]}}


def save(run_dir: Path, parts: dict[str, dict[str, torch.Tensor]], state: dict,
         unchanged: dict[str, PartRef] | None = None) -> dict[str, PartRef]:
    """Commits a new checkpoint: the tensors of each part in ``parts`` written anew, the
    parts in ``unchanged`` named as they are on disk, and the JSON-serialisable
    ``state``. Returns every part's reference (to pass back as ``unchanged`` later)."""
    run_dir = Path(run_dir)
    numbers = _numbers(run_dir)
    number = numbers[0] + 1 if numbers else 1
    refs = dict(unchanged or {})
    for name, ref in refs.items():
        if not (run_dir / ref["file"]).is_file():
            raise CheckpointError(f"part {name!r} ({ref['file']}) is gone from {run_dir}")
    blobs = {}
    for name, tensors in parts.items():
        owned = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
        blobs[name] = st_save(owned)
    fault_point("before tensors")
    for name, blob in blobs.items():
        path = _part_path(run_dir, number, name)
        _write_atomically(path, blob)
        refs[name] = {"file": path.name, "sha256": hashlib.sha256(blob).hexdigest()}
    fault_point("after tensors")
    json_path = _json_path(run_dir, number)
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps({**state, "parts": refs}, indent=1))
    fault_point("after json temp")
    os.replace(tmp, json_path)
    fault_point("after commit")
    _remove_unreferenced(run_dir, [number, *numbers])
    return refs


def _remove_unreferenced(run_dir: Path, numbers: list[int]) -> None:
    """Removes the JSONs after the first :data:`KEEP` of ``numbers`` (newest first),
    then every tensor file and temporary file that no kept JSON names."""
    for old in numbers[KEEP:]:
        _json_path(run_dir, old).unlink(missing_ok=True)
    named = set()
    for number in numbers[:KEEP]:
        try:
            state = json.loads(_json_path(run_dir, number).read_text())
            named |= {ref["file"] for ref in _parts_of(state).values()}
        except (OSError, ValueError, KeyError, TypeError):
            return  # a kept JSON we cannot read: keep every file it might name
    for path in run_dir.glob("checkpoint-*"):
        stale_tmp = path.name.endswith(".tmp")
        if stale_tmp or (path.suffix == ".safetensors" and path.name not in named):
            path.unlink(missing_ok=True)


def _read_part(run_dir: Path, json_name: str, ref: PartRef) -> dict[str, torch.Tensor]:
    path = run_dir / ref["file"]
    try:
        blob = path.read_bytes()
    except OSError:
        raise CheckpointError(f"{path.name} is missing") from None
    if hashlib.sha256(blob).hexdigest() != ref["sha256"]:
        raise CheckpointError(f"{path.name} does not match the sha256 recorded in "
                              f"{json_name} (truncated or changed on disk)")
    try:
        return st_load(blob)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path.name} is not a safetensors file ({exc})") from None


def _read(run_dir: Path, number: int) -> tuple[dict[str, torch.Tensor], dict]:
    json_path = _json_path(run_dir, number)
    try:
        state = json.loads(json_path.read_text())
        refs = _parts_of(state)
        files = [(ref["file"], ref["sha256"]) for ref in refs.values()]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{json_path.name} is unreadable ({exc})") from None
    if any(not isinstance(v, str) or "/" in v for pair in files for v in pair):
        raise CheckpointError(f"{json_path.name} names a part outside the run directory")
    tensors: dict[str, torch.Tensor] = {}
    for ref in refs.values():
        part = _read_part(run_dir, json_path.name, ref)
        if part.keys() & tensors.keys():
            raise CheckpointError(f"{json_path.name}: parts share tensor names "
                                  f"{sorted(part.keys() & tensors.keys())[:3]}")
        tensors.update(part)
    # sorted: safetensors' in-memory loader does not promise an order
    return dict(sorted(tensors.items())), state


def load(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The newest whole checkpoint's tensors and state (``state["parts"]``: its parts)."""
    run_dir = Path(run_dir)
    numbers = _numbers(run_dir)
    if not numbers:
        raise CheckpointError(f"{run_dir} has no checkpoint-*.json: not a lorm run directory, "
                              "or it stopped before its first round finished")
    problems = []
    for number in numbers:
        try:
            tensors, state = _read(run_dir, number)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        for problem in problems:
            print(f"warning: {run_dir}: {problem}; resuming from checkpoint {number} instead",
                  file=sys.stderr)
        return tensors, {**state, "parts": _parts_of(state)}
    raise CheckpointError(f"{run_dir}: no whole checkpoint to resume from: " + "; ".join(problems))


def latest_state(run_dir: Path) -> dict:
    """The newest committed checkpoint's JSON state (no tensor check)."""
    numbers = _numbers(Path(run_dir))
    if not numbers:
        raise CheckpointError(f"{run_dir} has no checkpoint")
    return json.loads(_json_path(run_dir, numbers[0]).read_text())
