"""Atomic checkpoints: tensors in safetensors, bookkeeping in JSON.

Each save writes a new tensor file ``checkpoint-<step>.safetensors``, then the JSON
that names it (written to a temporary file and renamed: the commit point), then
removes older tensor files. A crash at any moment leaves the last committed
checkpoint whole. Loading uses safetensors and JSON only, never pickle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

STATE = "checkpoint.json"


def save(run_dir: Path, step: int, tensors: dict[str, torch.Tensor], state: dict) -> None:
    run_dir = Path(run_dir)
    name = f"checkpoint-{step:06d}.safetensors"
    owned = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    save_file(owned, str(run_dir / name))
    tmp = run_dir / (STATE + ".tmp")
    tmp.write_text(json.dumps({**state, "tensors": name}, indent=1))
    os.replace(tmp, run_dir / STATE)
    for old in run_dir.glob("checkpoint-*.safetensors"):
        if old.name != name:
            old.unlink()


def load(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    run_dir = Path(run_dir)
    if not (run_dir / STATE).is_file():
        raise FileNotFoundError(f"{run_dir} has no {STATE}: not a lorm run directory, or it "
                                "stopped before its first round finished")
    state = json.loads((run_dir / STATE).read_text())
    return load_file(str(run_dir / state["tensors"])), state
