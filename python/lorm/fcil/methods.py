"""Federated methods as small objects over one shared loop.

A method says which factor trains in a round, which statistics the clients collect,
what they send (a :class:`ClientUpdate` of ``(p, q)`` sums) and how the server's
:class:`MergeResult` becomes the next global model. The loop does the rest.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, Callable

import torch
from torch import nn

from .. import merge
from ..aggregate import MergeResult
from ..lora import LoRALinear, kaiming_uniform
from ..messages import ClientUpdate, SolveStats
from ..stats import StatsCollector


class Method(ABC):
    """``cross_task``: how a task's residual joins the deployed model: ``"gram-merge"``
    (clients send end-of-task Grams; :class:`~lorm.cross_task.CrossTaskMerger`),
    ``"mean"`` (the plain mean of the tasks' residuals; nothing is sent) or ``"last"``
    (the latest residual alone)."""

    name = ""
    cross_task = "gram-merge"

    def __init__(self, alpha_backbone: float, alpha_head: float):
        self.alpha_b, self.alpha_h = alpha_backbone, alpha_head

    def benchmark(self, bench):
        """The tasks and clients this method runs on (a reference row reshapes them);
        federated methods take the benchmark as it is."""
        return bench

    @abstractmethod
    def trains(self, rnd: int) -> str:
        """``"A"``, ``"B"`` or ``"AB"``: the trainable factor(s) of round ``rnd``."""

    def message_factor(self, rnd: int) -> str:
        return self.trains(rnd) if self.trains(rnd) in ("A", "B") else "full"

    def stats_mode(self, rnd: int) -> str | None:
        """The collector mode of the client's statistics pass (None: no pass)."""
        return "diag" if self.alpha_b == 0 else "full"

    def start_task(self, layers: dict[str, LoRALinear], gen: torch.Generator) -> None:
        """Fresh factors for a new task: ``A`` Kaiming-uniform from ``gen``, ``B = 0``."""
        for layer in layers.values():
            layer.set_delta(None)
            layer.set_factors(a=kaiming_uniform(tuple(layer.A.shape), gen),
                              b=torch.zeros_like(layer.B))

    def head_stats(self, head: nn.Linear, stats: StatsCollector | None, n: int) -> SolveStats:
        return merge.full_stats(head.weight.detach(), stats.head_gram, self.alpha_h)

    def client_message(self, task: int, rnd: int, layers: dict[str, LoRALinear], head: nn.Linear,
                       stats: StatsCollector | None, num_samples: int) -> ClientUpdate:
        return ClientUpdate(task=task, round=rnd, factor=self.message_factor(rnd),
                            num_samples=num_samples,
                            layers=self.layer_stats(rnd, layers, stats, num_samples),
                            head=self.head_stats(head, stats, num_samples),
                            head_bias=head.bias.detach().clone())

    @abstractmethod
    def layer_stats(self, rnd, layers, stats, n) -> dict[str, SolveStats]:
        """Per LoRA layer, the (p, q) statistics this client sends."""

    def apply(self, rnd: int, result: MergeResult, layers: dict[str, LoRALinear], head: nn.Linear,
              gen: torch.Generator) -> None:
        """Writes the merged round into the global model."""
        self.apply_layers(rnd, result, layers, gen)
        with torch.no_grad():
            head.weight.copy_(result.head_weight)
            head.bias.copy_(result.head_bias)

    @abstractmethod
    def apply_layers(self, rnd, result, layers, gen) -> None:
        """Writes the merged layer results into the global LoRA layers."""

    def task_residuals(self, layers: dict[str, LoRALinear]) -> dict[str, torch.Tensor]:
        """The task's final residual ``dW_t`` per layer."""
        return {name: layer.residual() for name, layer in layers.items()}


class LoRM(Method):
    """LoRM: one factor per round, merged in closed form. ``schedule`` "alternate"
    trains B on even rounds and A on odd ones; "A" / "B" train only that factor."""

    def __init__(self, alpha_backbone: float, alpha_head: float, schedule: str = "alternate"):
        super().__init__(alpha_backbone, alpha_head)
        self.schedule = schedule
        self.name = {"alternate": "lorm", "A": "lorm-a", "B": "lorm-b"}[schedule]

    def trains(self, rnd: int) -> str:
        if self.schedule == "alternate":
            return "B" if rnd % 2 == 0 else "A"
        return self.schedule

    def stats_mode(self, rnd: int) -> str:
        return "lowrank" if self.trains(rnd) == "B" else super().stats_mode(rnd)

    def start_task(self, layers, gen) -> None:
        if self.schedule != "A":
            return super().start_task(layers, gen)
        # Training only A needs a non-zero B to give A a gradient: B is drawn, A starts at 0.
        for layer in layers.values():
            layer.set_delta(None)
            layer.set_factors(a=torch.zeros_like(layer.A),
                              b=kaiming_uniform(tuple(layer.B.shape), gen))

    def layer_stats(self, rnd, layers, stats, n):
        out = {}
        for name, layer in layers.items():
            if self.trains(rnd) == "A":
                out[name] = merge.a_step_stats(layer.A.detach(), stats.grams[name], self.alpha_b)
            else:
                h = merge.lowrank_h(layer.A.detach(), stats.projected[name], stats.grams[name],
                                    self.alpha_b)
                out[name] = merge.b_step_stats(layer.B.detach(), h)
        return out

    def apply_layers(self, rnd, result, layers, gen) -> None:
        factor = self.trains(rnd)
        for name, layer in layers.items():
            layer.set_factors(**{factor.lower(): result.layers[name]})


def _average_stats(m: torch.Tensor, n: int) -> SolveStats:
    """FedAvg as a sum-and-solve: ``p = n M``, ``q = n`` (diagonal), so ``p_sum / q_sum``
    is the sample-weighted mean."""
    return SolveStats(p=n * m.to(torch.float64), q=torch.full((m.shape[1],), float(n),
                                                              dtype=torch.float64))


class FedAvgLoRA(Method):
    """Baseline: A and B train together and are averaged separately; so is the head."""

    name = "fedavg-lora"

    def __init__(self, alpha_backbone: float, alpha_head: float, cross_task: str = "mean"):
        super().__init__(alpha_backbone, alpha_head)
        self.cross_task = cross_task

    def trains(self, rnd: int) -> str:
        return "AB"

    def stats_mode(self, rnd: int) -> None:
        return None

    def head_stats(self, head, stats, n):
        return _average_stats(head.weight.detach(), n)

    def layer_stats(self, rnd, layers, stats, n):
        out = {}
        for name, layer in layers.items():
            out[f"{name}/A"] = _average_stats(layer.A.detach(), n)
            out[f"{name}/B"] = _average_stats(layer.B.detach(), n)
        return out

    def apply_layers(self, rnd, result, layers, gen) -> None:
        for name, layer in layers.items():
            layer.set_factors(a=result.layers[f"{name}/A"], b=result.layers[f"{name}/B"])


class RegMeanLoRA(Method):
    """Baseline: A and B train together; the server merges each client's full residual
    ``delta + B_i A_i`` with RegMean into a dense ``delta`` and restarts the factors."""

    name = "regmean-lora"

    def trains(self, rnd: int) -> str:
        return "AB"

    def layer_stats(self, rnd, layers, stats, n):
        out = {}
        for name, layer in layers.items():
            full = layer.residual() if layer.delta is None else layer.delta + layer.residual()
            out[name] = merge.full_stats(full, stats.grams[name], self.alpha_b)
        return out

    def apply_layers(self, rnd, result, layers, gen) -> None:
        for name, layer in layers.items():
            layer.set_delta(result.layers[name])
            layer.set_factors(a=kaiming_uniform(tuple(layer.A.shape), gen),
                              b=torch.zeros_like(layer.B))

    def task_residuals(self, layers):
        return {name: layer.delta.clone() for name, layer in layers.items()}


def _one_client(per_client: list[list[int]]) -> list[list[int]]:
    return [sorted(i for client in per_client for i in client)]


class Finetune(FedAvgLoRA):
    """Lower bound: one client holding every client's data, the tasks in sequence, one
    LoRA trained on through them (no restart, no merge): what plain sequential training
    forgets."""

    name = "finetune"
    cross_task = "last"

    def __init__(self, alpha_backbone: float, alpha_head: float):
        super().__init__(alpha_backbone, alpha_head, "last")

    def benchmark(self, bench):
        return dataclasses.replace(bench, client_indices=[_one_client(c) for c in
                                                          bench.client_indices])

    def start_task(self, layers, gen) -> None:
        # Fresh factors only before any training (B = 0 everywhere, also after a resume
        # from the first task's start); later tasks train on from where the last ended.
        if not any(layer.B.detach().any() for layer in layers.values()):
            return super().start_task(layers, gen)
        for layer in layers.values():
            layer.set_delta(None)


class Joint(FedAvgLoRA):
    """Upper bound: one client, one task holding every class and every sample, the same
    LoRA, rounds and local epochs (so each sample is seen as often as in the federated
    run)."""

    name = "joint"

    def __init__(self, alpha_backbone: float, alpha_head: float):
        super().__init__(alpha_backbone, alpha_head, "last")

    def benchmark(self, bench):
        return dataclasses.replace(
            bench, task_classes=[[c for task in bench.task_classes for c in task]],
            client_indices=[_one_client([c for task in bench.client_indices for c in task])],
            test_indices=[sorted(i for task in bench.test_indices for i in task)])


# method name -> maker(config): the one list of the methods lorm runs
MAKERS: dict[str, Callable[[Any], Method]] = {
    "lorm": lambda c: LoRM(c.alpha_backbone, c.alpha_head, "alternate"),
    "fedavg-lora": lambda c: FedAvgLoRA(c.alpha_backbone, c.alpha_head, c.fedavg_cross_task),
    "regmean-lora": lambda c: RegMeanLoRA(c.alpha_regmean_lora, c.alpha_head),
    "lorm-a": lambda c: LoRM(c.alpha_backbone, c.alpha_head, "A"),
    "lorm-b": lambda c: LoRM(c.alpha_backbone, c.alpha_head, "B"),
    "joint": lambda c: Joint(c.alpha_backbone, c.alpha_head),
    "finetune": lambda c: Finetune(c.alpha_backbone, c.alpha_head),
}
METHOD_NAMES = tuple(MAKERS)


def make_method(config) -> Method:
    """The method a :class:`~lorm.fcil.config.Config` names, with its knobs."""
    if config.method not in MAKERS:
        raise ValueError(f"unknown method {config.method!r}; one of {sorted(MAKERS)}")
    return MAKERS[config.method](config)
