"""The node's half: a Flower ``ClientApp`` over lorm's own :class:`~lorm.fcil.client.Client`.

Each node is one federated client: its ``partition-id`` (node config; in simulation
Flower sets it) is the client index of the benchmark. A message carries the run's
:class:`~lorm.fcil.config.Config` (``lorm.run``), the server's deployed state
(``lorm.model``, ``Server.deployed_tensors``) and what to do (``lorm.step``); the node
process keeps one Client per config (its data, model and method; built on the first
message, kept while Flower keeps the process) and runs exactly what ``lorm run`` runs
for that client:

- ``train``: :meth:`Client.round_update` (local training + statistics pass) -> the
  :class:`~lorm.messages.ClientUpdate` in records (:mod:`lorm.flower.records`);
- ``train.gram``: :meth:`Client.task_end_update` (end-of-task Grams);
- ``evaluate``: correct/total counts on the node's share of the test batches;
- ``query``: the node's partition id (the server maps node ids to clients with it).
"""

from __future__ import annotations

import json

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..fcil.client import Client
from ..fcil.config import Config
from ..fcil.federation import build_federation
from ..fcil.loop import resolve_device
from .records import record_to_tensors, update_to_content
from .shares import shard_of_batches

RUN, MODEL, STEP = "lorm.run", "lorm.model", "lorm.step"

_clients: dict[str, Client] = {}


def partition_id(context: Context) -> int:
    """The node's client index: node config ``partition-id`` (an int >= 0)."""
    value = context.node_config.get("partition-id")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"node config 'partition-id' must be an integer >= 0, got {value!r} "
                         "(flower-supernode --node-config \"partition-id=0\")")
    return value


def node_client(config_json: str) -> Client:
    """This process's :class:`Client` for a config (built once: data, backbone, method)."""
    if config_json not in _clients:
        config = Config(**json.loads(config_json)).validate()
        if config.num_threads > 0:
            torch.set_num_threads(config.num_threads)
        federation = build_federation(config, resolve_device(config.device))
        _clients.clear()  # one run at a time per node process
        _clients[config_json] = Client(federation, model=federation.model)
    return _clients[config_json]


def _prepared(msg: Message, serving_only: bool = False) -> tuple[Client, dict]:
    """The node's client with the server's state installed (:meth:`Client.load`; with
    ``serving_only``, :meth:`Client.serve`), and the step."""
    content = msg.content
    client = node_client(str(content[RUN]["config"]))
    tensors = {k: v.to(client.device) for k, v in record_to_tensors(content[MODEL]).items()}
    (client.serve if serving_only else client.load)(tensors)
    return client, dict(content[STEP])


def _wire_dtypes(client: Client) -> tuple[torch.dtype, torch.dtype]:
    return getattr(torch, client.config.wire_dtype), getattr(torch, client.config.wire_gram_dtype)


def handle_train(msg: Message, context: Context) -> Message:
    """One round of this client: train, statistics pass, the update as records."""
    client, step = _prepared(msg)
    update = client.round_update(int(step["task"]), int(step["round"]), partition_id(context))
    return Message(update_to_content(update, *_wire_dtypes(client)), reply_to=msg)


def handle_gram(msg: Message, context: Context) -> Message:
    """The end-of-task Grams of this client, through the task's residuals (computed
    from the deployed factors by the run's own method, as the server does)."""
    client, step = _prepared(msg)
    update = client.task_end_update(int(step["task"]), partition_id(context))
    return Message(update_to_content(update, *_wire_dtypes(client)), reply_to=msg)


def handle_evaluate(msg: Message, context: Context) -> Message:
    """Correct/total counts of the deployed model (``W0 + delta``) on share ``shard`` of
    ``shards`` of every test task's batches, classes of tasks <= ``task``."""
    client, step = _prepared(msg, serving_only=True)
    task, shard, shards = int(step["task"]), int(step["shard"]), int(step["shards"])
    correct, total = [], []
    for j in range(task + 1):
        indices = shard_of_batches(client.bench.test_indices[j], shard, shards)
        c, t = client.count_correct(indices, j, task) if indices else (0, 0)
        correct.append(c)
        total.append(t)
    return Message(RecordDict({"lorm.eval": MetricRecord({"correct": correct, "total": total})}),
                   reply_to=msg)


def handle_query(msg: Message, context: Context) -> Message:
    """The node's partition id."""
    return Message(RecordDict({"lorm.node": ConfigRecord({"partition-id": partition_id(context)})}),
                   reply_to=msg)


def make_client_app() -> ClientApp:
    """A ClientApp routing ``train``, ``train.gram``, ``evaluate`` and ``query``."""
    app = ClientApp()
    app.train()(handle_train)
    app.train("gram")(handle_gram)
    app.evaluate()(handle_evaluate)
    app.query()(handle_query)
    return app


app = make_client_app()
