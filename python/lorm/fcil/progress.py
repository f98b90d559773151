"""Where a run is and what it has measured, and the run directory it reports into:
``metrics.jsonl``, ``summary.json``, ``accuracy_matrix.png``, ``config.yaml``."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from .config import Config

PHASES = ("train", "stats", "merge", "eval")


@dataclass
class Progress:
    """Where the run is, and what it has measured so far (all JSON-serialisable)."""

    task: int = 0
    round: int = 0
    phase: str = "round"              # "round" or "task_end" (of `task`)
    acc: list[list[float]] = field(default_factory=list)
    metrics_lines: int = 0
    round_bytes: int = 0              # uploaded in rounds, all clients
    client_rounds: int = 0
    task_end_bytes: int = 0           # uploaded by the end-of-task Gram passes
    seconds: dict[str, float] = field(default_factory=lambda: {p: 0.0 for p in PHASES})


class Clock:
    """Seconds per phase (:data:`PHASES`), added into ``seconds`` (a Progress's)."""

    def __init__(self, seconds: dict[str, float] | None = None):
        self.seconds = seconds if seconds is not None else {p: 0.0 for p in PHASES}

    def timed(self, phase: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[phase] += time.perf_counter() - start
        return out


def append_metrics(run_dir: Path, record: dict) -> None:
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(run_dir: Path, lines: int) -> None:
    """Keeps the first ``lines`` records of metrics.jsonl (what a checkpoint counted)."""
    kept = (run_dir / "metrics.jsonl").read_text().splitlines()[:lines]
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))


def write_summary(run_dir: Path, summary: dict, title: str) -> None:
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    plot_accuracy_matrix(summary["accuracy_matrix"], run_dir / "accuracy_matrix.png", title)


def plot_accuracy_matrix(acc: list[list[float]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = len(acc)
    grid = torch.full((size, size), float("nan"))
    for t, row in enumerate(acc):
        grid[t, :len(row)] = torch.tensor(row)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * size, 1 + 0.6 * size))
    ax.imshow(grid.numpy(), vmin=0, vmax=1, cmap="viridis")
    for t, row in enumerate(acc):
        for j, a in enumerate(row):
            ax.text(j, t, f"{100 * a:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if a < 0.6 else "black")
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("after task")
    ax.set_title(f"{title}: accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def check_output_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuses a run directory that already holds something, unless ``overwrite``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--output {run_dir} exists and is not a directory")
    held = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    if held and not overwrite:
        raise ValueError(f"output directory {run_dir} is not empty ({', '.join(held[:4])}"
                         f"{', ...' if len(held) > 4 else ''}): continue that run with "
                         f"`lorm run --resume {run_dir}`, or replace it with --overwrite")


def start_output_dir(run_dir: Path, config: Config) -> None:
    """Empties ``run_dir`` (the run has started cleanly by now) and writes the config."""
    if run_dir.is_dir() and any(run_dir.iterdir()):
        trash = run_dir.with_name(f".{run_dir.name}.replaced-{os.getpid()}")
        os.replace(run_dir, trash)
        shutil.rmtree(trash)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (run_dir / "metrics.jsonl").write_text("")
