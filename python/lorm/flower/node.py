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
- ``query``: the node's partition id (the server maps node ids to clients with it);
- ``train.secagg``: one step of secure aggregation (``secure_aggregation: secagg+``,
  lorm.secagg): the first step (``advert``) runs the round's or task end's step as
  ``train`` / ``train.gram`` do and keeps the client's masking party, the next three
  answer from it; the party lives in the node's ``Context.state`` between messages
  (a deployment starts a fresh ClientApp process for every message), on the node only.
"""

from __future__ import annotations

import hashlib
import json

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..fcil.client import Client
from ..fcil.config import Config
from ..fcil.federation import build_federation
from ..fcil.loop import resolve_device
from ..fcil.transport import through_wire
from .records import record_to_tensors, update_to_content
from .shares import shard_of_batches

RUN, MODEL, STEP = "lorm.run", "lorm.model", "lorm.step"
SECAGG = "lorm.secagg"          # a secure-aggregation step's record: step, exchange, client, request
SECAGG_TYPE = "train.secagg"    # its message type (a reply's record: step, answer)
KEPT = "lorm.secagg.kept"       # Context.state: this node's party between the steps

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


def handle_secagg(msg: Message, context: Context) -> Message:
    """One step of secure aggregation for this node's client (lorm.secagg.exchange's
    :class:`~lorm.secagg.exchange.HostedClients`). ``advert`` carries the run config,
    the deployed state and the step as a ``train`` message does, and the update is
    made exactly as there (round update or task-end Grams, through the wire dtypes);
    only its masked form ever leaves the node. The party (its keys, seeds and, until the
    masked input, the update's terms) is kept in ``context.state`` under :data:`KEPT`,
    one exchange at a time: a new ``advert`` replaces it, and once ``reveal`` is
    answered only the last answer is kept. A step sent again (the server re-sends an
    unanswered message) is answered with the same bytes, not run twice."""
    from ..secagg.exchange import ADVERT, REVEAL, HostedClients
    from ..secagg.party import MaskingParty
    from ..secagg.wire import ProtocolError

    record = msg.content[SECAGG]
    step, exchange = str(record["step"]), bytes(record["exchange"])
    request, client = bytes(record["request"]), partition_id(context)
    if int(record["client"]) != client:
        raise ProtocolError(f"a {step} step for client {record['client']} sent to the node of client {client}")
    digest = hashlib.sha256(exchange + b"\0" + step.encode() + b"\0" + request).digest()
    kept = context.state.get(KEPT)
    if kept is not None and bytes(kept["exchange"]) == exchange and bytes(kept["digest"]) == digest:
        return _secagg_reply(msg, step, bytes(kept["answer"]))
    if step == ADVERT:
        lorm_client, plan = _prepared(msg)
        task, rnd = int(plan["task"]), int(plan["round"])

        def produce(c: int):
            update = (lorm_client.round_update(task, rnd, c) if rnd >= 0
                      else lorm_client.task_end_update(task, c))
            return through_wire(update, lorm_client.config)[0]
        config = lorm_client.config
        hosted = HostedClients(produce, config.secagg_threshold, config.secagg_neighbours)
    else:
        if kept is None or bytes(kept["exchange"]) != exchange or "party" not in kept:
            raise ProtocolError(f"{step} of an exchange client {client} has no party for")
        party = MaskingParty.from_bytes(bytes(kept["party"]))
        hosted = HostedClients(None, *party.settings)
        hosted.parties[client] = party
    answer = hosted.answer(step, client, request)
    keep = {"exchange": exchange, "digest": digest, "answer": answer}
    if step != REVEAL:
        keep["party"] = hosted.parties[client].to_bytes()
    context.state[KEPT] = ConfigRecord(keep)
    return _secagg_reply(msg, step, answer)


def _secagg_reply(msg: Message, step: str, answer: bytes) -> Message:
    return Message(RecordDict({SECAGG: ConfigRecord({"step": step, "answer": answer})}), reply_to=msg)


def make_client_app() -> ClientApp:
    """A ClientApp routing ``train``, ``train.gram``, ``train.secagg``, ``evaluate`` and
    ``query``."""
    app = ClientApp()
    app.train()(handle_train)
    app.train("gram")(handle_gram)
    app.train("secagg")(handle_secagg)
    app.evaluate()(handle_evaluate)
    app.query()(handle_query)
    return app


app = make_client_app()
