"""The Server role: the deployed state (global head, LoRA factors, served residuals),
each round's aggregation and solve, the cross-task merge at a task's end, and the
checkpoints of all of it. It never trains and never reads data."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import merge
from ..aggregate import Aggregator
from ..cross_task import CrossTaskMerger
from . import checkpoint
from .federation import Federation
from .progress import Clock
from .randomness import derived_seed


class Server:
    """Holds the global model of a :class:`Federation` and turns summed client updates
    into the next one.

    Args:
        federation: the config made concrete; the server owns ``federation.model``.
        clock: where the merge seconds go.
    """

    def __init__(self, federation: Federation, clock: Clock | None = None):
        self.config, self.method = federation.config, federation.method
        self.model, self.layers, self.head = federation.model, federation.layers, federation.head
        self.clock = clock or Clock()
        self.merger = CrossTaskMerger()
        self.history: dict[str, torch.Tensor] = {}  # sum of the earlier tasks' residuals
        self.part_refs: dict[str, checkpoint.PartRef] = {}  # the last checkpoint's parts

    # -- state ------------------------------------------------------------------------
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

    def serving_tensors(self) -> dict[str, torch.Tensor]:
        """The deployed model to evaluate: the head and each layer's served ``delta``."""
        return {k: t for k, t in self.deployed_tensors().items()
                if k.startswith("head.") or k.endswith(".delta")}

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

    def tensors(self) -> dict[str, torch.Tensor]:
        """The server's whole state: :meth:`round_tensors` and :meth:`task_tensors`."""
        return {**self.round_tensors(), **self.task_tensors()}

    def load_deployed(self, tensors: dict[str, torch.Tensor]) -> None:
        """Installs :meth:`deployed_tensors` (of a server of this run) as the global model."""
        with torch.no_grad():
            self.head.weight.copy_(tensors["head.weight"])
            self.head.bias.copy_(tensors["head.bias"])
        for name, layer in self.layers.items():
            layer.set_factors(a=tensors[f"{name}.A"], b=tensors[f"{name}.B"])
            layer.set_delta(tensors.get(f"{name}.delta"))
        self.history = {k[len("history/"):]: v.clone() for k, v in tensors.items()
                        if k.startswith("history/")}

    # -- checkpoints --------------------------------------------------------------------
    def save(self, run_dir: Path, state: dict, task_changed: bool = False) -> None:
        """Commits a checkpoint with the JSON ``state``: :meth:`round_tensors` always,
        :meth:`task_tensors` only when ``task_changed`` (or not yet on disk)."""
        parts, unchanged = {"round": self.round_tensors()}, {}
        if task_changed or "task" not in self.part_refs:
            parts["task"] = self.task_tensors()
        else:
            unchanged["task"] = self.part_refs["task"]
        self.part_refs = checkpoint.save(run_dir, parts, state, unchanged)

    def restore(self, tensors: dict[str, torch.Tensor], parts: dict[str, checkpoint.PartRef],
                tasks_done: int) -> None:
        """The state of a checkpoint (``checkpoint.load``) after ``tasks_done`` tasks."""
        self.load_deployed(tensors)
        device = self.head.weight.device
        self.merger.load_state_dict({k[len("merger/"):]: v.to(device)
                                     for k, v in tensors.items() if k.startswith("merger/")},
                                    num_tasks=tasks_done)
        self.part_refs = dict(parts)

    # -- rounds -------------------------------------------------------------------------
    def start_task(self, task: int) -> None:
        """The method's fresh factors for ``task`` (drawn from the run's seed)."""
        gen = torch.Generator().manual_seed(derived_seed([self.config.seed, task, 0xA]))
        self.method.start_task(self.layers, gen)

    def round_aggregator(self, task: int, rnd: int) -> Aggregator:
        """The empty aggregator of round ``rnd`` of ``task``."""
        return Aggregator(task, rnd, self.method.message_factor(rnd))

    def finish_round(self, task: int, rnd: int, aggregator: Aggregator) -> None:
        """Solves the round's sums and writes them into the global model."""
        mixed = self.config.solve_precision == "mixed"
        result = self.clock.timed("merge", aggregator.result, mixed_precision=mixed)
        gen = torch.Generator().manual_seed(derived_seed([self.config.seed, task, rnd, 0xB]))
        self.method.apply(rnd, result, self.layers, self.head, gen)

    # -- task ends ----------------------------------------------------------------------
    @property
    def wants_task_end_grams(self) -> bool:
        """Whether the cross-task merge needs the clients' end-of-task Grams."""
        return self.method.cross_task == "gram-merge"

    def task_end_aggregator(self, task: int) -> Aggregator:
        """The empty aggregator of ``task``'s end-of-task Grams."""
        return Aggregator(task, self.config.rounds, "G")

    def end_task(self, task: int, grams: dict[str, torch.Tensor] | None) -> None:
        """Merges ``task``'s residuals into the served model by the method's
        ``cross_task`` rule (``grams``: the summed end-of-task Grams of ``gram-merge``)
        and adds them to the history."""
        residuals = self.method.task_residuals(self.layers)
        deployed = self.CROSS_TASK[self.method.cross_task](self, task, residuals, grams)
        for name, residual in residuals.items():
            self.history[name] = residual.clone() if task == 0 else self.history[name] + residual
        for name, delta in deployed.items():
            self.layers[name].deploy(delta)

    # How a task's residual joins the deployed model, by Method.cross_task.
    def _gram_merge(self, task: int, residuals: dict[str, torch.Tensor],
                    grams: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """The CrossTaskMerger's solve over every task's residuals and summed Grams."""
        self.clock.timed("merge", self.merger.add_task, residuals, grams)
        return self.clock.timed("merge", self.merger.merged,
                                mixed_precision=self.config.solve_precision == "mixed")

    def _mean(self, task, residuals, grams) -> dict[str, torch.Tensor]:
        """The plain mean of the tasks' residuals; nothing is sent."""
        return merge.running_mean(self.history, residuals, task)

    def _last(self, task, residuals, grams) -> dict[str, torch.Tensor]:
        """The latest residual alone (a model trained on through the tasks)."""
        return dict(residuals)

    CROSS_TASK = {"gram-merge": _gram_merge, "mean": _mean, "last": _last}
