"""The server's half: :class:`LoRMStrategy`, a Flower ``Strategy`` over lorm's own loop.

:meth:`LoRMStrategy.start` runs :func:`lorm.fcil.loop.run` (or ``resume``) with a
:class:`FlowerRun`: the same :class:`~lorm.fcil.loop.Run` (schedule, Method objects,
:class:`~lorm.aggregate.Aggregator`, :class:`~lorm.aggregate.CrossTaskMerger`,
checkpoints after every round and task, metrics, summary), whose three client-facing
steps go over Flower messages instead of calling the clients in-process:

- a round: :meth:`configure_train` sends the deployed state and ``(task, round)`` to
  the nodes of the sampled clients; :meth:`aggregate_train` adds each reply into the
  round's Aggregator as it arrives (:class:`~lorm.flower.replies.ReplyStream`) and
  applies the solved round (``Run.finish_round``);
- a task end (``gram-merge`` methods): the same with message type ``train.gram``;
- the accuracy row: :meth:`configure_evaluate` / :meth:`aggregate_evaluate` sum
  correct/total counts over the nodes' shares of the test batches.

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
from .node import MODEL, RUN, STEP, shard_of_batches
from .records import content_to_update, tensors_to_record
from .replies import ReplyStream

log = logging.getLogger("lorm.flower")


class RoundFailed(RuntimeError):
    """Fewer than ``min_replies`` accepted updates arrived in time."""


class FlowerRun(loop.Run):
    """A :class:`~lorm.fcil.loop.Run` whose clients are Flower nodes (set ``strategy``
    before :meth:`execute`)."""

    strategy: "LoRMStrategy"

    def run_round(self, task: int, rnd: int) -> None:
        self.strategy.exchange_train(task, rnd, self.sampled_clients(task, rnd))

    def task_end_grams(self, task: int, residuals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.strategy.exchange_train(task, None, self.task_end_clients(task))

    def evaluate_task(self, task: int) -> list[float]:
        return self.timed("eval", self.strategy.exchange_evaluate, task)


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
        self.run: FlowerRun | None = None
        self.grid: Grid | None = None
        self.partitions: dict[int, int] = {}  # node id -> client index (as it answered)
        self._nodes_of: dict[int, int] = {}   # client index -> the node used for it
        self._row: list[float] = []
        self.server_round = 0
        self.summary_: dict | None = None
        self._step: dict = {}
        self._grams: dict[str, torch.Tensor] = {}

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
        The summary is in :attr:`summary_` and ``run_dir/summary.json``."""
        self.grid = grid
        if timeout is not None:
            self.round_timeout = timeout
        self.summary()

        def make_run(config: Config, run_dir: Path, quiet: bool) -> FlowerRun:
            self.run = FlowerRun(config, run_dir, quiet)
            self.run.strategy = self
            return self.run

        if self.resume:
            self.summary_ = loop.resume(self.run_dir, quiet=True, runner_class=make_run)
        else:
            self.summary_ = loop.run(self.config, self.run_dir, quiet=True,
                                     overwrite=self.overwrite, runner_class=make_run)
        result = Result()
        result.arrays = tensors_to_record(self.run.deployed_tensors())
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
    def exchange_train(self, task: int, rnd: int | None, clients: list[int]):
        """One round (``rnd``) or task end (``rnd`` None) with ``clients``: configure,
        stream replies into the aggregator, aggregate. Returns the summed Grams of a task end."""
        run, self._grams = self.run, {}
        with_data = [c for c in clients if run.bench.client_indices[task][c]]
        self._step = {"task": task, "round": -1 if rnd is None else rnd, "clients": clients,
                      "targets": self.nodes_for(with_data)}
        self.server_round += 1
        arrays = self.deployed_record()
        messages = self.configure_train(self.server_round, arrays, ConfigRecord(), self.grid)
        self.aggregate_train(self.server_round, ReplyStream(
            self.grid, messages, self.round_timeout, self.poll, self.retries))
        return self._grams

    def deployed_record(self, serving_only: bool = False) -> ArrayRecord:
        """What nodes need of the server's state (:meth:`Run.deployed_tensors`): the
        earlier tasks' residuals only where the statistics model reads them
        (``stats_model = running-mean``); for evaluation (``serving_only``) just the head
        and the deployed residuals."""
        tensors = self.run.deployed_tensors()
        if serving_only:
            tensors = {k: t for k, t in tensors.items()
                       if k.startswith("head.") or k.endswith(".delta")}
        elif self.run.config.stats_model != "running-mean":
            tensors = {k: t for k, t in tensors.items() if not k.startswith("history/")}
        return tensors_to_record(tensors)

    def _run_config(self) -> ConfigRecord:
        return ConfigRecord({"config": json.dumps(self.run.config.to_dict(), sort_keys=True)})

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """One message per node of the step's clients: run config, deployed state, step."""
        step = self._step
        kind = "train" if step["round"] >= 0 else "train.gram"
        return [Message(RecordDict({RUN: self._run_config(), MODEL: arrays,
                                    STEP: ConfigRecord({"task": step["task"], "round": step["round"],
                                                        "client": client, **dict(config)})}),
                        node, kind, group_id=str(server_round))
                for node, client in step["targets"].items()]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Adds each reply into the step's Aggregator as it arrives, then solves the round
        into the global model (or keeps a task end's Gram sums); returns the new deployed
        state and the round's counts."""
        step, run = self._step, self.run
        task, rnd = step["task"], step["round"]
        aggregator = run.round_aggregator(task, rnd) if rnd >= 0 else run.task_end_aggregator(task)
        sent = 0
        for reply in replies:
            sent += add_reply(aggregator, reply)
        missing = getattr(replies, "missing", [])
        if missing:
            log.warning("task %s %s: no reply from node(s) %s", task,
                        f"round {rnd}" if rnd >= 0 else "end", missing)
        needed = max(1, self.min_replies or len(step["targets"]))
        if aggregator.num_clients < needed:
            raise RoundFailed(f"task {task} {'round ' + str(rnd) if rnd >= 0 else 'end'}: "
                              f"{aggregator.num_clients} accepted update(s), {needed} needed; "
                              f"the run continues from its last checkpoint with resume=True")
        if rnd >= 0:
            run.finish_round(task, rnd, aggregator, step["clients"], sent, aggregator.num_clients)
        else:
            run.progress.task_end_bytes += sent
            self._grams = {name: s.q for name, s in aggregator.sums().items()}
        metrics = MetricRecord({"accepted": aggregator.num_clients, "bytes": sent,
                                "num-examples": aggregator.num_samples})
        return (tensors_to_record(run.deployed_tensors()) if rnd >= 0 else None), metrics

    # -- evaluation -------------------------------------------------------------------------
    def exchange_evaluate(self, task: int) -> list[float]:
        """The accuracy row after ``task`` from the nodes' counts."""
        self.refresh_nodes()
        self._step = {"task": task, "targets": self.nodes_for(sorted(self._nodes_of))}
        self.server_round += 1
        arrays = self.deployed_record(serving_only=True)
        messages = self.configure_evaluate(self.server_round, arrays, ConfigRecord(), self.grid)
        self.aggregate_evaluate(self.server_round, ReplyStream(
            self.grid, messages, self.round_timeout, self.poll, self.retries))
        return self._row

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Share ``i`` of the test batches to the ``i``-th node."""
        step = self._step
        nodes = sorted(step["targets"])
        step["shards"] = {node: i for i, node in enumerate(nodes)}
        return [Message(RecordDict({RUN: self._run_config(), MODEL: arrays,
                                    STEP: ConfigRecord({"task": step["task"], "shard": i,
                                                        "shards": len(nodes), **dict(config)})}),
                        node, "evaluate", group_id=str(server_round))
                for node, i in step["shards"].items()]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord:
        """Sums the counts; a share whose node did not answer is counted by the server on
        its own copy of the test data (logged), so the row always covers every sample."""
        step, run = self._step, self.run
        task, shards = step["task"], step["shards"]
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
        for node, i in shards.items():
            if node in done:
                continue
            log.warning("node %s did not evaluate share %s of %s; the server counts it", node,
                        i, len(shards))
            for j in range(task + 1):
                indices = shard_of_batches(run.bench.test_indices[j], i, len(shards))
                c, t = run.count_correct(indices, j, task) if indices else (0, 0)
                correct[j] += c
                total[j] += t
        if not shards:
            log.warning("no node to evaluate on; the server counts every share")
            for j in range(task + 1):
                c, t = run.count_correct(run.bench.test_indices[j], j, task)
                correct[j] += c
                total[j] += t
        self._row = [c / max(t, 1) for c, t in zip(correct, total)]
        return MetricRecord({"accuracy": self._row})


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
