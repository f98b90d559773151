"""The Transport role: how a round travels between the Server and the Clients.

A transport carries three exchanges of the schedule (lorm.fcil.loop): a round (the
deployed state out, client updates summed into the round's Aggregator), a task end
(the same with end-of-task Grams) and an evaluation (correct/total counts of the
deployed model). :class:`InProcess` runs the clients in this process; :class:`Torchrun`
shards them over torch.distributed ranks and all-reduces the sums; lorm.flower's
transport sends them to Flower nodes. The round trip (load, step, wire, add, sum) is
written once, in :meth:`InProcess.exchange`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Callable

import torch
from tqdm.auto import tqdm

from ..aggregate import Aggregator
from ..distributed import (DistContext, all_reduce_aggregator, all_reduce_numbers,
                           check_identical, shard)
from ..messages import ClientUpdate
from .client import Client
from .config import Config
from .federation import Federation
from .progress import Clock

if TYPE_CHECKING:
    from ..secagg.exchange import Courier, HostedClients

State = dict[str, torch.Tensor]


class Transport(ABC):
    """Carries the schedule's exchanges. ``is_main``: this process reports and saves."""

    is_main: bool = True

    @abstractmethod
    def round(self, task: int, rnd: int, clients: list[int], state: State,
              aggregator: Aggregator) -> int:
        """Each of ``clients`` (all holding data of ``task``) trains from ``state`` and
        sends its update; the updates end up summed in ``aggregator``. Returns the bytes
        uploaded."""

    @abstractmethod
    def task_end(self, task: int, clients: list[int], state: State,
                 aggregator: Aggregator) -> int:
        """Each of ``clients`` sends its end-of-task Grams through the task's residuals
        (from ``state``), summed into ``aggregator``. Returns the bytes uploaded."""

    @abstractmethod
    def evaluate(self, task: int, serving: State) -> list[float]:
        """Accuracy on every task ``0..task`` of the model ``serving`` (head, deltas),
        argmax over the classes of tasks <= ``task``."""

    @abstractmethod
    def evaluate_live(self, task: int, state: State) -> float:
        """Accuracy on ``task`` of the in-task model (``state`` with LoRA on)."""

    def agree(self, tensors: State, phase: str) -> None:
        """Checks that every process holds the same server state (nothing to check in one)."""

    def courier(self, task: int, rnd: int | None, state: State) -> Courier:
        """How secure aggregation (lorm.fcil.secure) reaches the clients of round ``rnd``
        of ``task`` (``None``: the task end), which start from ``state``."""
        raise NotImplementedError(f"{type(self).__name__} cannot carry secure aggregation")


def through_wire(update: ClientUpdate, config: Config) -> tuple[ClientUpdate, int]:
    """The update as the server receives it, through its wire bytes (``wire_dtype``,
    ``wire_gram_dtype``), and how many bytes that was. Its tensors stay in the wire
    dtype: the aggregator adds them into float64 sums exactly as they are."""
    data = update.to_bytes(getattr(torch, config.wire_dtype), getattr(torch, config.wire_gram_dtype))
    return ClientUpdate.from_bytes(data, dtype=None), len(data)


class InProcess(Transport):
    """Every client runs in this process, one after another, on one :class:`Client`."""

    def __init__(self, federation: Federation, clock: Clock, quiet: bool = True):
        self.config, self.bench, self.device = federation.config, federation.bench, federation.device
        self.clock, self.quiet = clock, quiet
        self.client = Client(federation, clock=clock, quiet=quiet)

    # -- where torchrun differs ---------------------------------------------------------
    def shard(self, items: list) -> list:
        """This process's share of ``items``."""
        return list(items)

    def sum_aggregator(self, aggregator: Aggregator, phase: str) -> None:
        """The sums of every process's share, in ``aggregator``."""

    def sum_numbers(self, values: list[float], phase: str) -> list[float]:
        """``values`` summed over processes."""
        return list(values)

    # -- exchanges ----------------------------------------------------------------------
    def round(self, task, rnd, clients, state, aggregator) -> int:
        return self.exchange(clients, state, aggregator, f"task {task} round {rnd}",
                             lambda c: self.client.round_update(task, rnd, c))

    def task_end(self, task, clients, state, aggregator) -> int:
        return self.exchange(clients, state, aggregator, f"task {task} end",
                             lambda c: self.client.task_end_update(task, c))

    def exchange(self, clients: list[int], state: State, aggregator: Aggregator, phase: str,
                 step: Callable[[int], ClientUpdate]) -> int:
        """This process's share of ``clients``: load ``state``, ``step``, through the
        wire, into ``aggregator``; then the sums and byte counts of every process."""
        sent = 0
        for client in tqdm(self.shard(clients), desc=phase, leave=False, disable=self.quiet):
            self.client.load(state)
            update, size = through_wire(step(client), self.config)
            sent += size
            self.clock.timed("merge", aggregator.add, update)
        self.clock.timed("merge", self.sum_aggregator, aggregator, phase)
        return int(self.sum_numbers([sent], f"{phase}: byte count")[0])

    def courier(self, task, rnd, state) -> Courier:
        from ..secagg.exchange import LocalCourier  # needs the secagg extra's packages
        return LocalCourier(self.hosted(task, rnd, state))

    def hosted(self, task: int, rnd: int | None, state: State) -> HostedClients:
        """This process's clients under secure aggregation: each loads ``state``, runs its
        step and puts the update through the wire dtype, as :meth:`exchange` does."""
        from ..secagg.exchange import HostedClients

        def produce(client: int) -> ClientUpdate:
            self.client.load(state)
            update = (self.client.round_update(task, rnd, client) if rnd is not None
                      else self.client.task_end_update(task, client))
            return through_wire(update, self.config)[0]
        return HostedClients(produce, self.config.secagg_threshold, self.config.secagg_neighbours)

    def evaluate(self, task, serving) -> list[float]:
        self.client.serve(serving)
        return [self.clock.timed("eval", self.accuracy, j, task) for j in range(task + 1)]

    def evaluate_live(self, task, state) -> float:
        self.client.load(state)
        return self.clock.timed("eval", self.accuracy, task, task)

    def accuracy(self, test_task: int, seen_task: int) -> float:
        """The installed model's accuracy on ``test_task`` (classes of tasks <= ``seen_task``)."""
        indices = self.shard(self.bench.test_indices[test_task])
        correct, total = self.client.count_correct(indices, test_task, seen_task)
        correct, total = self.sum_numbers([correct, total], f"evaluation of task {test_task}")
        return correct / max(total, 1)


class Torchrun(InProcess):
    """The clients of a round (and the test samples) sharded over torch.distributed
    ranks; one all-reduce sums the updates, every rank solves the same sums, and a
    checksum after each round asserts that all ranks hold the same weights."""

    def __init__(self, federation: Federation, clock: Clock, quiet: bool, ctx: DistContext):
        super().__init__(federation, clock, quiet)
        self.ctx = ctx
        self.is_main = ctx.is_main

    def shard(self, items: list) -> list:
        return shard(items, self.ctx)

    def sum_aggregator(self, aggregator: Aggregator, phase: str) -> None:
        all_reduce_aggregator(aggregator, self.ctx, phase, self.device)

    def sum_numbers(self, values: list[float], phase: str) -> list[float]:
        return all_reduce_numbers(values, self.ctx, phase, self.device)

    def agree(self, tensors: State, phase: str) -> None:
        check_identical(tensors, self.ctx, phase, self.device)

    def courier(self, task, rnd, state) -> Courier:
        from ..secagg.torchrun import TorchrunCourier
        return TorchrunCourier(self.hosted(task, rnd, state), self.ctx, self.device)


def local_transport(federation: Federation, clock: Clock, quiet: bool,
                    ctx: DistContext) -> Transport:
    """:class:`Torchrun` under torchrun (``ctx`` of several ranks), else :class:`InProcess`."""
    if ctx.enabled:
        return Torchrun(federation, clock, quiet or not ctx.is_main, ctx)
    return InProcess(federation, clock, quiet)
