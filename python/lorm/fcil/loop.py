"""The federated class-incremental loop: tasks x rounds x clients, the end-of-task
cross-task merge, evaluation, metrics, checkpoints and resume.

Every random draw derives from the seed and where it happens (lorm.fcil.randomness),
so two runs of one config are bit-identical and a run resumed from its last checkpoint
finishes exactly like an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from .. import merge
from ..aggregate import Aggregator, CrossTaskMerger
from ..distributed import (all_reduce_aggregator, all_reduce_numbers, check_identical,
                           init_from_env, shard)
from ..backbones import Backbone, make_backbone
from ..backbones.base import build_lora
from ..lora import LoRALinear, head_of, serving
from ..messages import ClientUpdate, SolveStats
from . import checkpoint
from .client import collect_statistics, train_locally
from .config import Config, apply_overrides
from .data import Benchmark, build_benchmark
from .partition import sample_clients
from .randomness import EVAL, SETUP, STATS, TASK_END, TRAIN, derived_seed, drawn_from, make_loader
from .methods import Method, make_method
from .metrics import summarize

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


def running_mean(history: dict[str, torch.Tensor], current: dict[str, torch.Tensor],
                 task: int) -> dict[str, torch.Tensor]:
    """``(history + current) / (task + 1)`` per layer: the mean of ``task + 1`` residuals
    when ``history`` sums the ``task`` earlier ones (empty at task 0)."""
    if task == 0:
        return dict(current)
    return {name: (history[name] + r) / (task + 1) for name, r in current.items()}


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
    def __init__(self, config: Config, run_dir: Path, quiet: bool):
        self.config, self.run_dir, self.quiet = config, run_dir, quiet
        if config.num_threads > 0:
            torch.set_num_threads(config.num_threads)
        self.device = resolve_device(config.device)
        self.ctx = init_from_env(config.dist_timeout, self.device.type == "cuda")
        if self.ctx.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.quiet = quiet or not self.ctx.is_main  # rank 0 alone reports
        with drawn_from([config.seed, SETUP], self.device):  # e.g. check_input's sample
            self.set_up(config)

    def set_up(self, config: Config) -> None:
        """Backbone, weights, method, data, model and the server's empty state."""
        self.backbone: Backbone = make_backbone(config.backbone)
        # the weights first: a missing file stops the run before any data is read
        self.weights = self.backbone.weights(config)
        self.method: Method = make_method(config)
        bench = build_benchmark(config)
        model, layers, head = build_lora(self.backbone, config, bench.num_classes)
        used = {"train": sorted({i for task in bench.client_indices for c in task for i in c}),
                "test": sorted({i for task in bench.test_indices for i in task})}
        bench.train = self.backbone.prepare(bench.train, used["train"])
        bench.test = self.backbone.prepare(bench.test, used["test"])
        for split, data in (("train", bench.train), ("test", bench.test)):
            self.backbone.check_input(model, data[used[split][0]][0],
                                      f"dataset {config.dataset!r} ({split})")
        self.bench: Benchmark = self.method.benchmark(bench)
        self.model, self.layers, self.head = model.to(self.device), layers, head
        self.client_model = copy.deepcopy(self.model)
        self.client_layers = {n: self.client_model.get_submodule(n) for n in layers}
        self.client_head = head_of(self.client_model)
        self.merger = CrossTaskMerger()
        self.history: dict[str, torch.Tensor] = {}  # sum of the earlier tasks' residuals
        self.progress = Progress()
        self.part_refs: dict[str, checkpoint.PartRef] = {}  # the last checkpoint's parts
        self.test_sizes = [len(ix) for ix in self.bench.test_indices]

    # -- state ------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """The server's whole state: :meth:`round_tensors` and :meth:`task_tensors`."""
        return {**self.round_tensors(), **self.task_tensors()}

    def round_tensors(self) -> dict[str, torch.Tensor]:
        """What a round may change: the head, every layer's ``A`` and ``B``, and the
        dense ``delta`` where a layer serves one (regmean-lora's, or a task's merge
        until the next task starts)."""
        return {k: v for k, v in self.deployed_tensors().items() if not k.startswith("history/")}

    def task_tensors(self) -> dict[str, torch.Tensor]:
        """What changes only at a task's end: the earlier tasks' residuals
        (``history/``) and the cross-task merger's sums (``merger/``)."""
        return {**{f"history/{k}": v for k, v in self.history.items()},
                **{f"merger/{k}": v for k, v in self.merger.state_dict().items()}}

    def deployed_tensors(self) -> dict[str, torch.Tensor]:
        """What a client needs of the server's state: the global head, every layer's
        ``A``, ``B`` and ``delta``, and the earlier tasks' residuals (``history/``)."""
        out = {"head.weight": self.head.weight, "head.bias": self.head.bias}
        for name, layer in self.layers.items():
            out[f"{name}.A"], out[f"{name}.B"] = layer.A, layer.B
            if layer.delta is not None:
                out[f"{name}.delta"] = layer.delta
        out.update({f"history/{k}": v for k, v in self.history.items()})
        return out

    def load_deployed(self, tensors: dict[str, torch.Tensor]) -> None:
        """Installs :meth:`deployed_tensors` (of this run's server) as the global model."""
        with torch.no_grad():
            self.head.weight.copy_(tensors["head.weight"])
            self.head.bias.copy_(tensors["head.bias"])
        for name, layer in self.layers.items():
            layer.set_factors(a=tensors[f"{name}.A"], b=tensors[f"{name}.B"])
            layer.set_delta(tensors.get(f"{name}.delta"))
        self.history = {k[len("history/"):]: v.clone() for k, v in tensors.items()
                        if k.startswith("history/")}

    def restore(self, tensors: dict[str, torch.Tensor], progress: dict) -> None:
        self.progress = Progress(**progress)
        self.load_deployed(tensors)
        self.merger.load_state_dict({k[len("merger/"):]: v.to(self.device)
                                     for k, v in tensors.items() if k.startswith("merger/")},
                                    num_tasks=len(self.progress.acc))

    def save(self, task_changed: bool = False) -> None:
        """Commits a checkpoint: :meth:`round_tensors` always, :meth:`task_tensors` only
        when ``task_changed`` (or when no checkpoint of this run names them yet)."""
        if not self.ctx.is_main:
            return
        parts, unchanged = {"round": self.round_tensors()}, {}
        if task_changed or "task" not in self.part_refs:
            parts["task"] = self.task_tensors()
        else:
            unchanged["task"] = self.part_refs["task"]
        self.part_refs = checkpoint.save(self.run_dir, parts,
                                         {"config": self.config.to_dict(),
                                          "progress": dataclasses.asdict(self.progress)},
                                         unchanged)

    def log(self, record: dict) -> None:
        if self.ctx.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        self.progress.metrics_lines += 1

    def timed(self, phase: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.progress.seconds[phase] += time.perf_counter() - start
        return out

    # -- one client -------------------------------------------------------------------
    def load_client(self) -> None:
        for name, src in self.layers.items():
            dst = self.client_layers[name]
            dst.set_factors(a=src.A, b=src.B)
            dst.set_delta(src.delta)
            dst.lora_enabled = True
        with torch.no_grad():
            self.client_head.weight.copy_(self.head.weight)
            self.client_head.bias.copy_(self.head.bias)

    def client_round(self, task: int, rnd: int, client: int) -> ClientUpdate:
        cfg = self.config
        indices = self.bench.client_indices[task][client]
        loader = make_loader(self.bench.train, indices, cfg.batch_size, [cfg.seed, task, rnd, client])
        classes = torch.tensor(self.bench.task_classes[task], device=self.device)
        self.load_client()
        lrs = {"A": cfg.lr_a, "B": cfg.lr_b, "head": cfg.lr_head}
        with drawn_from([cfg.seed, task, rnd, client, TRAIN], self.device):
            self.timed("train", train_locally, self.client_model, self.client_layers,
                       self.client_head, self.method.trains(rnd), loader, classes,
                       cfg.local_epochs, lrs, self.device, cfg.amp, self.backbone,
                       progress=not self.quiet)
        mode = self.method.stats_mode(rnd)
        stats = None
        if mode is not None:
            stats_loader = make_loader(self.bench.train, indices, cfg.batch_size,
                                       [cfg.seed, task, rnd, client, 1])
            current = {n: l.served_residual() for n, l in self.client_layers.items()}
            with self.statistics_model(task, current), \
                    drawn_from([cfg.seed, task, rnd, client, STATS], self.device):
                stats = self.timed("stats", collect_statistics, self.client_model,
                                   self.client_layers, self.client_head, mode, stats_loader,
                                   cfg.stats_passes, self.device, cfg.amp, self.backbone,
                                   cfg.stats_padding)
        return self.method.client_message(task, rnd, self.client_layers, self.client_head, stats,
                                          len(indices))

    def transmit(self, update: ClientUpdate) -> tuple[ClientUpdate, int]:
        """The update as the server receives it, through its wire bytes (``wire_dtype``,
        ``wire_gram_dtype``), and how many bytes that was. Its tensors stay in the wire
        dtype: the aggregator adds them into float64 sums exactly as they are."""
        data = update.to_bytes(getattr(torch, self.config.wire_dtype),
                               getattr(torch, self.config.wire_gram_dtype))
        return ClientUpdate.from_bytes(data, dtype=None), len(data)

    # -- rounds and tasks ---------------------------------------------------------------
    def run_round(self, task: int, rnd: int) -> None:
        cfg = self.config
        clients = self.sampled_clients(task, rnd)
        aggregator = self.round_aggregator(task, rnd)
        sent = 0
        mine = [c for c in shard(clients, self.ctx) if self.bench.client_indices[task][c]]
        for client in tqdm(mine, desc=f"task {task} round {rnd}", leave=False,
                           disable=self.quiet):
            update, size = self.transmit(self.client_round(task, rnd, client))
            sent += size
            self.timed("merge", aggregator.add, update)
        phase = f"task {task} round {rnd}"
        self.timed("merge", all_reduce_aggregator, aggregator, self.ctx, phase, self.device)
        sent, senders = (int(v) for v in all_reduce_numbers([sent, len(mine)], self.ctx,
                                                            f"{phase}: byte count", self.device))
        self.finish_round(task, rnd, aggregator, clients, sent, senders)

    # -- the server's half of a round (lorm.flower drives these too) ----------------------
    def round_aggregator(self, task: int, rnd: int) -> Aggregator:
        """The empty aggregator of round ``rnd`` of ``task``."""
        return Aggregator(task, rnd, self.method.message_factor(rnd))

    def finish_round(self, task: int, rnd: int, aggregator: Aggregator, clients: list[int],
                     sent: int, senders: int) -> None:
        """Solves the round's sums, applies them to the global model and logs the round
        (``sent`` bytes from ``senders`` of the sampled ``clients``)."""
        cfg = self.config
        phase = f"task {task} round {rnd}"
        result = self.timed("merge", aggregator.result, mixed_precision=cfg.solve_precision == "mixed")
        gen = torch.Generator().manual_seed(derived_seed([cfg.seed, task, rnd, 0xB]))
        self.method.apply(rnd, result, self.layers, self.head, gen)
        check_identical(self.tensors(), self.ctx, phase, self.device)
        self.progress.round_bytes += sent
        self.progress.client_rounds += senders
        record = {"type": "round", "task": task, "round": rnd, "trains": self.method.trains(rnd),
                  "clients": clients, "senders": senders, "bytes_per_client": sent / senders}
        if cfg.eval_every_round:
            record["current_task_accuracy"] = self.timed("eval", self.evaluate_live, task)
        self.log(record)

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

    def statistics_model(self, task: int, current: dict[str, torch.Tensor]):
        """A context in which the client layers serve what the statistics passes must see
        (``stats_model``, docs/fidelity.md): ``running-mean`` from task 1 on serves
        ``W0 + (sum of earlier tasks' residuals + current) / (task + 1)``; otherwise the
        client model stays as it is."""
        if self.config.stats_model == "current" or task == 0:
            return contextlib.nullcontext()
        return serving(self.client_layers, running_mean(self.history, current, task))

    def task_end_grams(self, task: int, residuals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every task client's Grams through the model with the task's residuals
        ``dW_t`` (as :meth:`statistics_model` serves it), summed: ``Gh_t`` per layer."""
        aggregator = self.task_end_aggregator(task)
        sent = 0
        for client in shard(self.task_end_clients(task), self.ctx):
            if not self.bench.client_indices[task][client]:
                continue  # a client without data of this task has nothing to send
            update, size = self.transmit(self.task_end_update(task, client, residuals))
            sent += size
            self.timed("merge", aggregator.add, update)
        phase = f"task {task} end"
        self.timed("merge", all_reduce_aggregator, aggregator, self.ctx, phase, self.device)
        self.progress.task_end_bytes += int(all_reduce_numbers([sent], self.ctx, phase,
                                                               self.device)[0])
        return {name: s.q for name, s in aggregator.sums().items()}

    def task_end_aggregator(self, task: int) -> Aggregator:
        """The empty aggregator of ``task``'s end-of-task Grams."""
        return Aggregator(task, self.config.rounds, "G")

    def task_end_update(self, task: int, client: int,
                        residuals: dict[str, torch.Tensor]) -> ClientUpdate:
        """The client's half of the task end: its Grams through the model serving the
        task's residuals, regularised, as a ``"G"`` update."""
        cfg = self.config
        mode = "diag" if cfg.alpha_backbone == 0 else "full"
        self.load_client()
        indices = self.bench.client_indices[task][client]
        loader = make_loader(self.bench.train, indices, cfg.batch_size,
                             [cfg.seed, task, cfg.rounds, client, 2])
        with serving(self.client_layers, residuals), self.statistics_model(task, residuals), \
                drawn_from([cfg.seed, task, cfg.rounds, client, TASK_END], self.device):
            stats = self.timed("stats", collect_statistics, self.client_model,
                               self.client_layers, None, mode, loader, cfg.stats_passes,
                               self.device, cfg.amp, self.backbone, cfg.stats_padding)
        return ClientUpdate(task, cfg.rounds, "G", len(indices), layers={
            name: SolveStats(p=None, q=merge.regularize_gram(g, cfg.alpha_backbone))
            for name, g in stats.grams.items()})

    # How a task's residual joins the deployed model, by Method.cross_task.
    def _gram_merge(self, task: int, residuals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Clients send end-of-task Grams; the CrossTaskMerger solves the merge."""
        return self.merge_task(residuals, self.task_end_grams(task, residuals))

    def merge_task(self, residuals: dict[str, torch.Tensor],
                   grams: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Adds the task's residuals and summed Grams to the cross-task sums; the merged
        residual per layer."""
        self.timed("merge", self.merger.add_task, residuals, grams)
        return self.timed("merge", self.merger.merged,
                          mixed_precision=self.config.solve_precision == "mixed")

    def _mean(self, task: int, residuals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The plain mean of the tasks' residuals; nothing is sent."""
        return running_mean(self.history, residuals, task)

    def _last(self, task: int, residuals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The latest residual alone (a model trained on through the tasks)."""
        return dict(residuals)

    CROSS_TASK = {"gram-merge": _gram_merge, "mean": _mean, "last": _last}

    def end_task(self, task: int) -> None:
        residuals = self.method.task_residuals(self.layers)
        deployed = self.CROSS_TASK[self.method.cross_task](self, task, residuals)
        self.deploy_task(task, residuals, deployed)
        self.record_task(task, self.evaluate_task(task))

    def evaluate_task(self, task: int) -> list[float]:
        """Accuracy on every task ``0..task`` of the deployed model after ``task``."""
        return [self.timed("eval", self.accuracy, j, task) for j in range(task + 1)]

    def deploy_task(self, task: int, residuals: dict[str, torch.Tensor],
                    deployed: dict[str, torch.Tensor]) -> None:
        """Adds ``task``'s residuals to the history and serves the ``deployed`` residuals."""
        for name, residual in residuals.items():
            self.history[name] = residual.clone() if task == 0 else self.history[name] + residual
        for name, delta in deployed.items():
            self.layers[name].deploy(delta)

    def record_task(self, task: int, row: list[float]) -> None:
        """``row``: accuracy on tasks ``0..task`` after ``task``; into the matrix and the log."""
        self.progress.acc.append(row)
        self.log({"type": "task", "task": task, "accuracy": row,
                  **summarize(self.progress.acc, self.test_sizes)})

    # -- evaluation ---------------------------------------------------------------------
    @torch.no_grad()
    def accuracy(self, test_task: int, seen_task: int, model: nn.Module | None = None) -> float:
        """Accuracy on ``test_task``'s test data, argmax over the classes of tasks <= ``seen_task``."""
        indices = shard(self.bench.test_indices[test_task], self.ctx)
        correct, total = self.count_correct(indices, test_task, seen_task, model)
        correct, total = all_reduce_numbers([correct, total], self.ctx,
                                            f"evaluation of task {test_task}", self.device)
        return correct / max(total, 1)

    @torch.no_grad()
    def count_correct(self, indices: list[int], test_task: int, seen_task: int,
                      model: nn.Module | None = None) -> tuple[int, int]:
        """``(correct, total)`` over the test samples ``indices`` (of ``test_task``),
        argmax over the classes of tasks <= ``seen_task``; counts of disjoint shares add up."""
        model = model or self.model
        seen = torch.tensor(sum(self.bench.task_classes[:seen_task + 1], []), device=self.device)
        loader = make_loader(self.bench.test, indices, 256, [0], shuffle=False)
        model.eval()
        correct = total = 0
        with drawn_from([self.config.seed, test_task, seen_task, EVAL], self.device):
            for x, y in loader:
                logits = model(self.backbone.to_device(x, self.device))[:, seen]
                correct += (seen[logits.argmax(1)] == y.to(self.device)).sum().item()
                total += len(y)
        return correct, total

    def evaluate_live(self, task: int) -> float:
        """The in-task global model (``W0 + current residual``) on the current task."""
        self.load_client()
        return self.accuracy(task, task, self.client_model)

    # -- the whole run --------------------------------------------------------------------
    def execute(self) -> dict:
        cfg, p = self.config, self.progress
        num_tasks = len(self.bench.task_classes)
        for task in tqdm(range(p.task, num_tasks), desc="tasks", disable=self.quiet,
                         initial=p.task, total=num_tasks):
            if p.phase == "round":
                if p.round == 0:
                    gen = torch.Generator().manual_seed(derived_seed([cfg.seed, task, 0xA]))
                    self.method.start_task(self.layers, gen)
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
            "weights": self.weights.record(),
            "accuracy_matrix": p.acc,
            **summarize(p.acc, self.test_sizes),
            "bytes_per_client_per_round": p.round_bytes / max(p.client_rounds, 1),
            "task_end_bytes_per_client": p.task_end_bytes / max(
                len(self.bench.client_indices[0]) * len(p.acc), 1),
            "seconds": p.seconds,
        }
        if self.ctx.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
            plot_accuracy_matrix(p.acc, self.run_dir / "accuracy_matrix.png", self.config.method)
        return summary


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


def _start_output_dir(run_dir: Path, config: Config) -> None:
    """Empties ``run_dir`` (the run has started cleanly by now) and writes the config."""
    if run_dir.is_dir() and any(run_dir.iterdir()):
        trash = run_dir.with_name(f".{run_dir.name}.replaced-{os.getpid()}")
        os.replace(run_dir, trash)
        shutil.rmtree(trash)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (run_dir / "metrics.jsonl").write_text("")


def run(config: Config, run_dir: str | Path, quiet: bool = False,
        overwrite: bool = False, runner_class: type[Run] = Run) -> dict:
    """Runs ``config`` from the start, writing into ``run_dir``; returns the summary.

    ``run_dir`` must be empty or absent; ``overwrite=True`` replaces what it holds, but
    only once the data, the model and the checks of the new run have passed.
    ``runner_class``: a :class:`Run` whose rounds go over another transport (lorm.flower)."""
    run_dir = Path(run_dir)
    config.validate()
    check_output_dir(run_dir, overwrite)
    runner = runner_class(config, run_dir, quiet)
    if runner.ctx.is_main:
        _start_output_dir(run_dir, config)
    runner.save()  # from here on, --resume can always continue the run
    return runner.execute()


# Config keys a resumed run may change: they cannot change what the run computes
# beyond floating-point round-off (thread count) or at all (timeouts).
RESUME_SETTABLE = ("num_threads", "dist_timeout")


def resume(run_dir: str | Path, quiet: bool = False, overrides: list[str] | None = None,
           runner_class: type[Run] = Run) -> dict:
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
    runner = runner_class(config, run_dir, quiet)
    try:
        runner.restore({k: v.to(runner.device) for k, v in tensors.items()}, state["progress"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise checkpoint.CheckpointError(f"{run_dir}: the checkpoint does not fit this run's "
                                         f"model ({type(exc).__name__}: {exc})") from None
    runner.part_refs = state["parts"]
    if runner.ctx.is_main:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()[:runner.progress.metrics_lines]
        (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    return runner.execute()
