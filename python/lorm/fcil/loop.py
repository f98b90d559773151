"""The schedule of a federated class-incremental run: tasks x rounds, then each task's
end and evaluation, asking the :class:`~lorm.fcil.server.Server` for state and solves
and a :class:`~lorm.fcil.transport.Transport` to carry each exchange to the clients;
checkpoints after every round and task, and ``--resume`` from the last one.

Every random draw derives from the seed and where it happens (lorm.fcil.randomness),
so two runs of one config are bit-identical and a run resumed from its last checkpoint
finishes exactly like an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..distributed import DistContext, init_from_env
from ..precision import describe
from . import checkpoint
from .client import count_correct
from .config import Config, apply_overrides
from .federation import Federation, build_federation
from .metrics import summarize
from .partition import sample_clients
from .progress import (Clock, Progress, append_metrics, check_output_dir, start_output_dir,
                       truncate_metrics, write_summary)
from .server import Server
from .secure import secured
from .transport import Transport, local_transport

# Builds the transport of a run: (federation, clock, quiet, torchrun context) -> Transport.
TransportFactory = Callable[[Federation, Clock, bool, DistContext], Transport]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a CUDA device that is not there is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ValueError(f"device = {name!r}, but torch sees {count} CUDA device(s); "
                             "use device=cpu or device=auto")
    return device


class Run:
    """One run's schedule over a Server and a Transport (default: in this process, or
    over torchrun's ranks when launched by torchrun)."""

    def __init__(self, config: Config, run_dir: Path, quiet: bool,
                 transport: TransportFactory = local_transport):
        self.config, self.run_dir = config, Path(run_dir)
        if config.num_threads > 0:
            torch.set_num_threads(config.num_threads)
        device = resolve_device(config.device)
        ctx = init_from_env(config.dist_timeout, device.type == "cuda")
        if ctx.enabled and device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.progress = Progress()
        self.clock = Clock(self.progress.seconds)
        self.federation = build_federation(config, device)
        self.bench, self.method = self.federation.bench, self.federation.method
        self.server = Server(self.federation, self.clock)
        # any transport, under secure aggregation when the config asks (lorm.fcil.secure)
        self.transport = secured(transport(self.federation, self.clock, quiet, ctx), self.federation)
        self.quiet = quiet or not self.transport.is_main  # the main process alone reports
        self.test_sizes = [len(ix) for ix in self.bench.test_indices]

    # -- state ------------------------------------------------------------------------
    def save(self, task_changed: bool = False) -> None:
        if self.transport.is_main:
            self.server.save(self.run_dir, {"config": self.config.to_dict(),
                                            "progress": dataclasses.asdict(self.progress)},
                             task_changed)

    def restore(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        """Continues from a checkpoint (``checkpoint.load``'s tensors and state)."""
        self.progress = Progress(**state["progress"])
        self.clock.seconds = self.progress.seconds
        self.server.restore({k: v.to(self.device) for k, v in tensors.items()}, state["parts"],
                            tasks_done=len(self.progress.acc))

    def log(self, record: dict) -> None:
        if self.transport.is_main:
            append_metrics(self.run_dir, record)
        self.progress.metrics_lines += 1

    # -- who takes part -------------------------------------------------------------------
    def sampled_clients(self, task: int, rnd: int) -> list[int]:
        """The clients of round ``rnd``: drawn once per task (fed-mammoth) or every round."""
        cfg = self.config
        draw = 0 if cfg.client_sampling == "per-task" else rnd
        return sample_clients(len(self.bench.client_indices[task]), cfg.participation, cfg.seed,
                              task, draw)

    def task_end_clients(self, task: int) -> list[int]:
        """Who sends end-of-task Grams: the task's clients (per-task sampling) or all."""
        if self.config.client_sampling == "per-task":
            return self.sampled_clients(task, 0)
        return list(range(len(self.bench.client_indices[task])))

    def with_data(self, task: int, clients: list[int]) -> list[int]:
        """``clients`` that hold data of ``task`` (the others have nothing to send)."""
        return [c for c in clients if self.bench.client_indices[task][c]]

    # -- rounds and tasks ---------------------------------------------------------------
    def run_round(self, task: int, rnd: int) -> None:
        clients = self.sampled_clients(task, rnd)
        aggregator = self.server.round_aggregator(task, rnd)
        sent = self.transport.round(task, rnd, self.with_data(task, clients),
                                    self.server.deployed_tensors(), aggregator)
        self.server.finish_round(task, rnd, aggregator)
        self.transport.agree(self.server.tensors(), f"task {task} round {rnd}")
        senders = aggregator.num_clients
        self.progress.round_bytes += sent
        self.progress.client_rounds += senders
        record = {"type": "round", "task": task, "round": rnd, "trains": self.method.trains(rnd),
                  "clients": clients, "senders": senders, "bytes_per_client": sent / senders}
        if self.config.eval_every_round:
            record["current_task_accuracy"] = self.transport.evaluate_live(
                task, self.server.deployed_tensors())
        self.log(record)

    def end_task(self, task: int) -> None:
        """The task end: Grams from the clients where the cross-task merge needs them,
        the merge, then the accuracy row of the deployed model."""
        grams = None
        if self.server.wants_task_end_grams:
            aggregator = self.server.task_end_aggregator(task)
            clients = self.with_data(task, self.task_end_clients(task))
            self.progress.task_end_bytes += self.transport.task_end(
                task, clients, self.server.deployed_tensors(), aggregator)
            grams = {name: s.q for name, s in aggregator.sums().items()}
        self.server.end_task(task, grams)
        self.record_task(task, self.transport.evaluate(task, self.server.serving_tensors()))

    def accuracy(self, test_task: int, seen_task: int, model: torch.nn.Module) -> float:
        """``model``'s accuracy on ``test_task``'s test data, argmax over the classes of
        tasks <= ``seen_task`` (e.g. an exported model, ``lorm eval``)."""
        correct, total = count_correct(model, self.federation, self.bench.test_indices[test_task],
                                       test_task, seen_task)
        return correct / max(total, 1)

    def record_task(self, task: int, row: list[float]) -> None:
        """``row``: accuracy on tasks ``0..task`` after ``task``; into the matrix and the log."""
        self.progress.acc.append(row)
        self.log({"type": "task", "task": task, "accuracy": row,
                  **summarize(self.progress.acc, self.test_sizes)})

    # -- the whole run --------------------------------------------------------------------
    def execute(self) -> dict:
        cfg, p = self.config, self.progress
        num_tasks = len(self.bench.task_classes)
        for task in tqdm(range(p.task, num_tasks), desc="tasks", disable=self.quiet,
                         initial=p.task, total=num_tasks):
            if p.phase == "round":
                if p.round == 0:
                    self.server.start_task(task)
                for rnd in range(p.round, cfg.rounds):
                    self.run_round(task, rnd)
                    p.round, p.phase = (rnd + 1, "round") if rnd + 1 < cfg.rounds else (rnd + 1, "task_end")
                    self.save()
            self.end_task(task)
            p.task, p.round, p.phase = task + 1, 0, "round"
            self.save(task_changed=True)
            if not self.quiet:
                tqdm.write(f"task {task}: accuracy over tasks <= {task}: "
                           f"{summarize(p.acc, self.test_sizes)['final_average_accuracy']:.4f}")
        return self.finish()

    def finish(self) -> dict:
        p = self.progress
        summary = {
            "config": self.config.to_dict(),
            "weights": self.federation.weights.record(),
            "amp": describe(self.federation.amp),
            "accuracy_matrix": p.acc,
            **summarize(p.acc, self.test_sizes),
            "bytes_per_client_per_round": p.round_bytes / max(p.client_rounds, 1),
            "task_end_bytes_per_client": p.task_end_bytes / max(
                len(self.bench.client_indices[0]) * len(p.acc), 1),
            "seconds": p.seconds,
        }
        if self.transport.is_main:
            write_summary(self.run_dir, summary, self.config.method)
        return summary


def run(config: Config, run_dir: str | Path, quiet: bool = False, overwrite: bool = False,
        transport: TransportFactory = local_transport) -> dict:
    """Runs ``config`` from the start, writing into ``run_dir``; returns the summary.

    ``run_dir`` must be empty or absent; ``overwrite=True`` replaces what it holds, but
    only once the data, the model and the checks of the new run have passed.
    ``transport``: how the exchanges travel (lorm.flower passes its own)."""
    run_dir = Path(run_dir)
    config.validate()
    check_output_dir(run_dir, overwrite)
    runner = Run(config, run_dir, quiet, transport)
    if runner.transport.is_main:
        start_output_dir(run_dir, config)
    runner.save()  # from here on, --resume can always continue the run
    return runner.execute()


# Config keys a resumed run may change: they cannot change what the run computes
# beyond floating-point round-off (thread count) or at all (timeouts).
RESUME_SETTABLE = ("num_threads", "dist_timeout")


def resume(run_dir: str | Path, quiet: bool = False, overrides: list[str] | None = None,
           transport: TransportFactory = local_transport) -> dict:
    """Continues a run after its last whole checkpoint; the result equals an
    uninterrupted run. ``overrides`` may set only :data:`RESUME_SETTABLE` keys."""
    run_dir = Path(run_dir)
    tensors, state = checkpoint.load(run_dir)
    try:
        config = Config(**state["config"]).validate()
    except (TypeError, KeyError) as exc:
        raise checkpoint.CheckpointError(f"{run_dir}: the checkpoint's config is unusable "
                                         f"({exc})") from None
    if overrides:
        changed = apply_overrides(config, overrides)
        barred = sorted(k for k in Config.__dataclass_fields__
                        if getattr(changed, k) != getattr(config, k) and k not in RESUME_SETTABLE)
        if barred:
            raise ValueError(f"--resume continues the run as it was configured; --set may "
                             f"change only {', '.join(RESUME_SETTABLE)}, not {', '.join(barred)}")
        config = changed
    runner = Run(config, run_dir, quiet, transport)
    try:
        runner.restore(tensors, state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise checkpoint.CheckpointError(f"{run_dir}: the checkpoint does not fit this run's "
                                         f"model ({type(exc).__name__}: {exc})") from None
    if runner.transport.is_main:
        truncate_metrics(run_dir, runner.progress.metrics_lines)
    return runner.execute()
