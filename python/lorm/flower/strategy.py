"""The server's half: :class:`LoRMStrategy`, a Flower ``Strategy`` that carries lorm's
schedule.

:meth:`LoRMStrategy.start` runs :func:`lorm.fcil.loop.run` (or ``resume``) with a
:class:`~lorm.flower.transport.FlowerTransport`: the same schedule, Server (Method
objects, :class:`~lorm.aggregate.Aggregator`, :class:`~lorm.cross_task.CrossTaskMerger`,
checkpoints after every round and task), metrics and summary as ``lorm run``, with the
exchanges sent to Flower nodes:

- a round: :meth:`configure_train` sends the deployed state and the step (its
  ``config``: task, round, clients) to the nodes of the clients; :meth:`aggregate_train`
  adds each reply into the exchange's Aggregator as it arrives
  (:class:`~lorm.flower.replies.ReplyStream`); the schedule's Server then solves it;
- a task end (``gram-merge`` methods): the same with message type ``train.gram``;
- the accuracy row: :meth:`configure_evaluate` / :meth:`aggregate_evaluate` sum
  correct/total counts over the nodes' shares of the test batches;
- under ``secure_aggregation: secagg+`` the schedule wraps the transport
  (lorm.fcil.secure), and rounds and task ends take lorm.secagg's four steps as
  ``train.secagg`` messages (:class:`~lorm.flower.secure.FlowerCourier`): the strategy
  then receives masked vectors and installs only their unmasked sum.

A reply that is an error, unreadable, for another task/round/factor, or refused by the
Aggregator's checks is logged with its node id and left out; the sums are untouched.
A round completes when every addressed node answered, or after ``round_timeout``
seconds with at least ``min_replies`` accepted updates (the log names the missing
nodes); otherwise :class:`RoundFailed` stops the run, which ``resume=True`` continues
from the last checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from ..aggregate import Aggregator, UpdateRejected
from ..fcil import loop
from ..fcil.config import Config
from ..messages import MalformedUpdate
from .node import MODEL, RUN, STEP
from .records import content_to_update, tensors_to_record
from .replies import ReplyStream
from .transport import FlowerTransport

log = logging.getLogger("lorm.flower")


class RoundFailed(RuntimeError):
    """Fewer than ``min_replies`` accepted updates arrived in time."""


class LoRMStrategy(Strategy):
    """LoRM (and the baselines lorm runs) as a Flower strategy.

    Args:
        config: the run's configuration (as ``lorm run --config``).
        run_dir: checkpoints, metrics.jsonl, summary.json (as ``lorm run --output``).
        resume: continue the run in ``run_dir`` from its last checkpoint.
        overwrite: replace what ``run_dir`` holds (a fresh run only).
        min_replies: accepted updates a round needs once ``round_timeout`` has passed
            (default: every addressed node).
        round_timeout: seconds to wait for the replies of one exchange.
        retries: times an unanswered message is sent again after ``round_timeout``.
        poll: seconds between two pulls of replies.
    """

    def __init__(self, config: Config, run_dir: str | Path, resume: bool = False,
                 overwrite: bool = False, min_replies: int | None = None,
                 round_timeout: float = 600.0, poll: float = 0.05, retries: int = 1):
        if min_replies is not None and (isinstance(min_replies, bool) or min_replies < 1):
            raise ValueError(f"min_replies must be an integer >= 1, got {min_replies!r}")
        self.config, self.run_dir = config, Path(run_dir)
        self.resume, self.overwrite = resume, overwrite
        self.min_replies, self.round_timeout, self.poll = min_replies, round_timeout, poll
        self.retries = retries
        self.grid: Grid | None = None
        self.partitions: dict[int, int] = {}  # node id -> client index (as it answered)
        self._nodes_of: dict[int, int] = {}   # client index -> the node used for it
        self.server_round = 0
        self.summary_: dict | None = None
        self.transport: FlowerTransport | None = None
        # what configure_* decided for an exchange (by server round), for aggregate_*
        self._aggregators: dict[int, Aggregator] = {}
        self._targets: dict[int, tuple[int, int, dict[int, int]]] = {}
        self._shards: dict[int, tuple[int, dict[int, int]]] = {}

    # -- the run -------------------------------------------------------------------------
    def summary(self) -> None:
        log.info("LoRMStrategy: method %s, %s, min_replies %s, round_timeout %.0f s, run_dir %s",
                 self.config.method, self.config.dataset, self.min_replies or "all",
                 self.round_timeout, self.run_dir)

    def start(self, grid: Grid, initial_arrays: ArrayRecord | None = None, num_rounds: int = 0,
              timeout: float | None = None, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None, evaluate_fn=None) -> Result:
        """Runs the whole schedule (tasks x rounds, task ends, evaluation) over ``grid``;
        the schedule comes from the config, so ``num_rounds`` and ``initial_arrays`` are
        not used (the global model is built from the config's seed, as in ``lorm run``).
        The summary is in :attr:`summary_` and ``run_dir/summary.json``; the result's
        arrays are the deployed model (head and served residuals)."""
        self.grid = grid
        if timeout is not None:
            self.round_timeout = timeout
        self.summary()

        def transport(federation, clock, quiet, ctx) -> FlowerTransport:
            self.transport = FlowerTransport(self, federation, clock)
            return self.transport

        if self.resume:
            self.summary_ = loop.resume(self.run_dir, quiet=True, transport=transport)
        else:
            self.summary_ = loop.run(self.config, self.run_dir, quiet=True,
                                     overwrite=self.overwrite, transport=transport)
        result = Result()
        result.arrays = tensors_to_record(self.transport.last_serving)
        return result

    # -- node ids -> clients ---------------------------------------------------------------
    def refresh_nodes(self) -> None:
        """Asks every node not yet known (first contact, late joiners) for its partition id."""
        new = [n for n in self.grid.get_node_ids() if n not in self.partitions]
        if not new:
            return
        self.server_round += 1
        queries = [Message(RecordDict(), n, "query", group_id=str(self.server_round)) for n in new]
        stream = ReplyStream(self.grid, queries, self.round_timeout, self.poll, self.retries)
        for reply in stream:
            node = reply.metadata.src_node_id
            try:
                self.partitions[node] = int(reply.content["lorm.node"]["partition-id"])
            except Exception as exc:  # an error reply or a malformed one
                log.warning("node %s: no usable partition id (%s)", node, _why(reply, exc))
        taken: dict[int, int] = {}
        for node, part in sorted(self.partitions.items()):
            if part in taken:
                log.warning("nodes %s and %s both claim client %s; %s is used", taken[part],
                            node, part, taken[part])
            taken.setdefault(part, node)
        self._nodes_of = {part: node for part, node in taken.items()}

    def nodes_for(self, clients: list[int]) -> dict[int, int]:
        """node id -> client for the ``clients`` that have a node; logs the others."""
        self.refresh_nodes()
        absent = [c for c in clients if c not in self._nodes_of]
        if absent:
            log.warning("clients %s have no connected node this round", absent)
        return {self._nodes_of[c]: c for c in clients if c in self._nodes_of}

    # -- training exchanges ------------------------------------------------------------------
    def exchange_train(self, task: int, rnd: int | None, clients: list[int],
                       state: dict[str, torch.Tensor], aggregator: Aggregator) -> int:
        """One round (``rnd``) or task end (``rnd`` None) of ``clients``: configure, then
        stream the replies into ``aggregator``. Returns the bytes the replies carried."""
        self.refresh_nodes()
        self.server_round += 1
        number = self.server_round
        self._aggregators[number] = aggregator
        step = ConfigRecord({"task": task, "round": -1 if rnd is None else rnd,
                             "clients": list(clients)})
        messages = self.configure_train(number, self.deployed_record(state), step, self.grid)
        _, metrics = self.aggregate_train(number, ReplyStream(
            self.grid, messages, self.round_timeout, self.poll, self.retries))
        return int(metrics["bytes"])

    def deployed_record(self, state: dict[str, torch.Tensor]) -> ArrayRecord:
        """What nodes need of the deployed ``state``: the earlier tasks' residuals only
        where the statistics model reads them (``stats_model = running-mean``)."""
        if self.config.stats_model != "running-mean":
            state = {k: t for k, t in state.items() if not k.startswith("history/")}
        return tensors_to_record(state)

    def _run_config(self) -> ConfigRecord:
        return ConfigRecord({"config": json.dumps(self.config.to_dict(), sort_keys=True)})

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """One message per node of ``config``'s clients: run config, deployed ``arrays``,
        the step (``task``, ``round``; round -1: the task end's Grams)."""
        task, rnd = int(config["task"]), int(config["round"])
        targets = self.nodes_for([int(c) for c in config["clients"]])
        self._targets[server_round] = (task, rnd, targets)
        kind = "train" if rnd >= 0 else "train.gram"
        return [Message(RecordDict({RUN: self._run_config(), MODEL: arrays,
                                    STEP: ConfigRecord({"task": task, "round": rnd, "client": client})}),
                        node, kind, group_id=str(server_round))
                for node, client in targets.items()]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Adds each reply of exchange ``server_round`` into its Aggregator as it
        arrives; refuses the exchange (:class:`RoundFailed`) with too few accepted
        updates. The solve is the schedule's Server's, so no arrays are returned."""
        aggregator = self._aggregators.pop(server_round)
        task, rnd, targets = self._targets.pop(server_round)
        sent = 0
        for reply in replies:
            sent += add_reply(aggregator, reply)
        missing = getattr(replies, "missing", [])
        what = f"round {rnd}" if rnd >= 0 else "end"
        if missing:
            log.warning("task %s %s: no reply from node(s) %s", task, what, missing)
        self.require(aggregator.num_clients, len(targets), f"task {task} {what}")
        return None, MetricRecord({"accepted": aggregator.num_clients, "bytes": sent,
                                   "num-examples": aggregator.num_samples})

    def require(self, accepted: int, addressed: int, what: str) -> None:
        """:class:`RoundFailed` unless ``accepted`` updates (under secure aggregation:
        masked inputs) reach ``min_replies`` (default: the ``addressed`` nodes)."""
        needed = max(1, self.min_replies or addressed)
        if accepted < needed:
            raise RoundFailed(f"{what}: {accepted} accepted update(s), {needed} needed; the run "
                              "continues from its last checkpoint with resume=True")

    # -- evaluation -------------------------------------------------------------------------
    def exchange_evaluate(self, task: int, serving: dict[str, torch.Tensor]) -> list[float]:
        """The accuracy row after ``task`` of the deployed model ``serving``, from the
        nodes' counts."""
        self.refresh_nodes()
        self.server_round += 1
        number = self.server_round
        messages = self.configure_evaluate(number, tensors_to_record(serving),
                                           ConfigRecord({"task": task}), self.grid)
        metrics = self.aggregate_evaluate(number, ReplyStream(
            self.grid, messages, self.round_timeout, self.poll, self.retries))
        return list(metrics["accuracy"])

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Share ``i`` of the test batches to the ``i``-th node with a client."""
        task = int(config["task"])
        nodes = sorted(self.nodes_for(sorted(self._nodes_of)))
        shards = {node: i for i, node in enumerate(nodes)}
        self._shards[server_round] = (task, shards)
        return [Message(RecordDict({RUN: self._run_config(), MODEL: arrays,
                                    STEP: ConfigRecord({"task": task, "shard": i,
                                                        "shards": len(nodes)})}),
                        node, "evaluate", group_id=str(server_round))
                for node, i in shards.items()]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord:
        """Sums the counts; a share whose node did not answer is counted by the server on
        its own copy of the test data (logged), so the row always covers every sample."""
        task, shards = self._shards.pop(server_round)
        correct, total = [0] * (task + 1), [0] * (task + 1)
        done = set()
        for reply in replies:
            node = reply.metadata.src_node_id
            try:
                counts = reply.content["lorm.eval"]
                c, t = list(counts["correct"]), list(counts["total"])
                if len(c) != task + 1 or len(t) != task + 1:
                    raise ValueError(f"{len(c)} counts for {task + 1} tasks")
            except Exception as exc:
                log.warning("node %s: evaluation reply left out (%s)", node, _why(reply, exc))
                continue
            correct = [a + int(b) for a, b in zip(correct, c)]
            total = [a + int(b) for a, b in zip(total, t)]
            done.add(node)
        left = [(node, i) for node, i in shards.items() if node not in done]
        for node, i in left:
            log.warning("node %s did not evaluate share %s of %s; the server counts it", node,
                        i, len(shards))
        if not shards:
            log.warning("no node to evaluate on; the server counts every share")
            left = [(None, 0)]
        for _, i in left:
            c, t = self.transport.count_share(task, i, max(len(shards), 1))
            correct = [a + b for a, b in zip(correct, c)]
            total = [a + b for a, b in zip(total, t)]
        return MetricRecord({"accuracy": [c / max(t, 1) for c, t in zip(correct, total)]})


def add_reply(aggregator: Aggregator, reply: Message) -> int:
    """Adds one reply's update to ``aggregator``; logs and leaves out an error reply, an
    unreadable one or one the Aggregator refuses (its sums stay as they were). Returns
    the reply's payload bytes (0 if left out)."""
    node = reply.metadata.src_node_id
    if reply.has_error():
        log.warning("node %s: error reply (%s)", node, reply.error.reason)
        return 0
    try:
        update, nbytes = content_to_update(reply.content)
        aggregator.add(update)
    except (MalformedUpdate, UpdateRejected) as exc:
        log.warning("node %s: reply rejected: %s", node, exc)
        return 0
    return nbytes


def _why(reply: Message, exc: Exception) -> str:
    if reply.has_error():
        return f"error reply: {reply.error.reason}"
    return f"{type(exc).__name__}: {exc}"
