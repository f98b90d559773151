"""The node's half: a Flower ``ClientApp`` over lorm's own client code.

Each node is one federated client: its ``partition-id`` (node config; in simulation
Flower sets it) is the client index of the benchmark. A message carries the run's
:class:`~lorm.fcil.config.Config` (``lorm.run``), the server's deployed state
(``lorm.model``, :meth:`Run.deployed_tensors`) and what to do (``lorm.step``); the
node keeps one :class:`~lorm.fcil.loop.Run` per config (data, model, method) and runs
exactly what ``lorm run`` runs for that client:

- ``train``: :meth:`Run.client_round` (local training + statistics pass) -> the
  :class:`~lorm.messages.ClientUpdate` in records (:mod:`lorm.flower.records`);
- ``train.gram``: :meth:`Run.task_end_update` (end-of-task Grams);
- ``evaluate``: correct/total counts on the node's share of the test batches;
- ``query``: the node's partition id (the server maps node ids to clients with it).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..fcil.config import Config
from ..fcil.loop import Run
from .records import record_to_tensors, update_to_content

RUN, MODEL, STEP = "lorm.run", "lorm.model", "lorm.step"
EVAL_BATCH = 256  # Run.count_correct's batch: shares of whole batches give lorm run's bits

_runs: dict[str, Run] = {}


def partition_id(context: Context) -> int:
    """The node's client index: node config ``partition-id`` (an int >= 0)."""
    value = context.node_config.get("partition-id")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"node config 'partition-id' must be an integer >= 0, got {value!r} "
                         "(flower-supernode --node-config \"partition-id=0\")")
    return value


def node_run(config_json: str) -> Run:
    """This process's :class:`Run` for a config (built once: data, backbone, method)."""
    if config_json not in _runs:
        config = Config(**json.loads(config_json)).validate()
        run_dir = Path(tempfile.mkdtemp(prefix="lorm-node-"))
        _runs.clear()  # one run at a time per node process
        _runs[config_json] = Run(config, run_dir, quiet=True)
    return _runs[config_json]


def _prepared(msg: Message, serving_only: bool = False) -> tuple[Run, dict]:
    """The node's run with the server's state loaded (:meth:`Run.load_deployed`; with
    ``serving_only``, just the head and the deployed residuals, LoRA off), and the step."""
    content = msg.content
    run = node_run(str(content[RUN]["config"]))
    tensors = {k: v.to(run.device) for k, v in record_to_tensors(content[MODEL]).items()}
    if serving_only:
        with torch.no_grad():
            run.head.weight.copy_(tensors["head.weight"])
            run.head.bias.copy_(tensors["head.bias"])
        for name, layer in run.layers.items():
            layer.deploy(tensors.get(f"{name}.delta"))
    else:
        run.load_deployed(tensors)
    return run, dict(content[STEP])


def _wire_dtypes(run: Run) -> tuple[torch.dtype, torch.dtype]:
    return getattr(torch, run.config.wire_dtype), getattr(torch, run.config.wire_gram_dtype)


def handle_train(msg: Message, context: Context) -> Message:
    """One round of this client: train, statistics pass, the update as records."""
    run, step = _prepared(msg)
    client = partition_id(context)
    update = run.client_round(int(step["task"]), int(step["round"]), client)
    return Message(update_to_content(update, *_wire_dtypes(run)), reply_to=msg)


def handle_gram(msg: Message, context: Context) -> Message:
    """The end-of-task Grams of this client, through the task's residuals (computed
    from the deployed factors by the run's own method, as the server does)."""
    run, step = _prepared(msg)
    residuals = run.method.task_residuals(run.layers)
    update = run.task_end_update(int(step["task"]), partition_id(context), residuals)
    return Message(update_to_content(update, *_wire_dtypes(run)), reply_to=msg)


def handle_evaluate(msg: Message, context: Context) -> Message:
    """Correct/total counts of the deployed model (``W0 + delta``) on share ``shard`` of
    ``shards`` of every test task's batches, classes of tasks <= ``task``."""
    run, step = _prepared(msg, serving_only=True)
    task, shard, shards = int(step["task"]), int(step["shard"]), int(step["shards"])
    correct, total = [], []
    for j in range(task + 1):
        indices = shard_of_batches(run.bench.test_indices[j], shard, shards)
        c, t = run.count_correct(indices, j, task) if indices else (0, 0)
        correct.append(c)
        total.append(t)
    return Message(RecordDict({"lorm.eval": MetricRecord({"correct": correct, "total": total})}),
                   reply_to=msg)


def handle_query(msg: Message, context: Context) -> Message:
    """The node's partition id."""
    return Message(RecordDict({"lorm.node": ConfigRecord({"partition-id": partition_id(context)})}),
                   reply_to=msg)


def shard_of_batches(indices: list[int], shard: int, shards: int) -> list[int]:
    """Share ``shard`` of ``shards`` of ``indices`` as whole evaluation batches (every
    ``shards``-th batch): each batch is the one ``lorm run`` evaluates, bit for bit."""
    batches = [indices[k:k + EVAL_BATCH] for k in range(0, len(indices), EVAL_BATCH)]
    return [i for batch in batches[shard::shards] for i in batch]


def make_client_app() -> ClientApp:
    """A ClientApp routing ``train``, ``train.gram``, ``evaluate`` and ``query``."""
    app = ClientApp()
    app.train()(handle_train)
    app.train("gram")(handle_gram)
    app.evaluate()(handle_evaluate)
    app.query()(handle_query)
    return app


app = make_client_app()
