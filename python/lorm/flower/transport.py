"""The schedule's exchanges over Flower: :class:`FlowerTransport` hands each round, task
end and evaluation to :class:`~lorm.flower.strategy.LoRMStrategy`, which sends them to
the nodes as messages and streams the replies into the schedule's Aggregator; under
``secure_aggregation: secagg+`` the rounds and task ends go through
:class:`~lorm.flower.secure.FlowerCourier` instead (:meth:`FlowerTransport.courier`)."""

from __future__ import annotations

from typing import TYPE_CHECKING


from ..fcil.client import Client
from ..fcil.federation import Federation
from ..fcil.progress import Clock
from ..fcil.transport import State, Transport
from .shares import shard_of_batches

if TYPE_CHECKING:
    from .strategy import LoRMStrategy


class FlowerTransport(Transport):
    """Rounds, task ends and evaluations as Flower messages of ``strategy``'s grid.

    What the server itself counts (a test share whose node did not answer, the in-task
    accuracy of ``eval_every_round``) runs on a local :class:`Client`, built when first
    needed."""

    def __init__(self, strategy: "LoRMStrategy", federation: Federation, clock: Clock):
        self.strategy, self.federation, self.clock = strategy, federation, clock
        self._local: Client | None = None
        self.last_serving: State = {}

    @property
    def local(self) -> Client:
        if self._local is None:
            self._local = Client(self.federation, clock=self.clock)
        return self._local

    def round(self, task, rnd, clients, state, aggregator) -> int:
        return self.strategy.exchange_train(task, rnd, clients, state, aggregator)

    def task_end(self, task, clients, state, aggregator) -> int:
        return self.strategy.exchange_train(task, None, clients, state, aggregator)

    def courier(self, task, rnd, state):
        """Secure aggregation's steps as ``train.secagg`` messages (lorm.flower.secure)."""
        from .secure import FlowerCourier  # needs the secagg extra's packages
        return FlowerCourier(self.strategy, task, rnd, state)

    def evaluate(self, task: int, serving: State) -> list[float]:
        self.last_serving = serving
        return self.clock.timed("eval", self.strategy.exchange_evaluate, task, serving)

    def evaluate_live(self, task: int, state: State) -> float:
        self.local.load(state)
        indices = self.federation.bench.test_indices[task]
        correct, total = self.clock.timed("eval", self.local.count_correct, indices, task, task)
        return correct / max(total, 1)

    def count_share(self, task: int, shard: int, shards: int) -> tuple[list[int], list[int]]:
        """Correct/total per task ``0..task`` of share ``shard`` of ``shards``, counted
        here on the model the last :meth:`evaluate` served."""
        self.local.serve(self.last_serving)
        correct, total = [], []
        for j in range(task + 1):
            indices = shard_of_batches(self.federation.bench.test_indices[j], shard, shards)
            c, t = self.local.count_correct(indices, j, task) if indices else (0, 0)
            correct.append(c)
            total.append(t)
        return correct, total
