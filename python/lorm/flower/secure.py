"""Secure aggregation over Flower: :class:`FlowerCourier` carries each of lorm.secagg's
four steps (``advert``, ``share_keys``, ``masked_input``, ``reveal``) to the nodes as
``train.secagg`` messages and brings their answers back as bytes.

The server's half stays :func:`lorm.secagg.exchange.secure_exchange` (through
lorm.fcil.secure, which the schedule applies when the config says
``secure_aggregation: secagg+``); the node's half is
:func:`lorm.flower.node.handle_secagg`. A message carries its step in a ``ConfigRecord``
(``lorm.secagg``: step, exchange tag, client, request bytes); the ``advert`` also
carries the run config, the deployed state and the task/round, as a ``train`` message
does. A node that answers with an error, answers something unreadable, or does not
answer within the strategy's ``round_timeout`` (after its ``retries``) is absent from
that step: a dropout, which the protocol tolerates while enough holders remain.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from flwr.app import ConfigRecord, Message, RecordDict

from ..secagg import wire
from ..secagg.exchange import ADVERT, Courier
from ..secagg.unmasker import Unmasker
from ..secagg.wire import ProtocolError
from .node import MODEL, RUN, SECAGG, SECAGG_TYPE, STEP
from .replies import ReplyStream

if TYPE_CHECKING:
    from .strategy import LoRMStrategy

log = logging.getLogger("lorm.flower")


class FlowerCourier(Courier):
    """The steps of one exchange (round ``rnd`` of ``task``; ``None``: the task end)
    as Flower messages of ``strategy``'s grid, to the nodes of the clients asked at
    ``advert`` (fixed for the exchange)."""

    def __init__(self, strategy: LoRMStrategy, task: int, rnd: int | None,
                 state: dict[str, torch.Tensor]):
        self.strategy, self.task, self.rnd, self.state = strategy, task, rnd, state
        self.node_of: dict[int, int] = {}  # client -> node
        self.exchange = b""
        self.number = 0
        self.model = None

    @property
    def what(self) -> str:
        return f"task {self.task} " + (f"round {self.rnd}" if self.rnd is not None else "end")

    def ask(self, step: str, requests: dict[int, bytes]) -> dict[int, bytes]:
        if step == ADVERT:
            self._start(requests)
        strategy = self.strategy
        messages = [self._message(step, client, request)
                    for client, request in sorted(requests.items()) if client in self.node_of]
        client_of = {node: client for client, node in self.node_of.items()}
        replies = ReplyStream(strategy.grid, messages, strategy.round_timeout, strategy.poll,
                              strategy.retries)
        answers: dict[int, bytes] = {}
        for reply in replies:
            client = client_of.get(reply.metadata.src_node_id)
            answer = answer_of(reply, step)
            if client is not None and answer is not None:
                answers[client] = answer
        if replies.missing:
            log.warning("%s, secure aggregation %s: no reply from node(s) %s", self.what, step,
                        replies.missing)
        return answers

    def gather_masked(self, requests: dict[int, bytes], unmasker: Unmasker) -> int:
        """As :meth:`Courier.gather_masked`, but a masked input the Unmasker cannot read
        counts as a dropout (named in the log), and fewer masked inputs than the
        strategy's ``min_replies`` (default: every addressed node) refuse the exchange
        as a plain round with too few updates is refused."""
        sent = 0
        for client, data in self.ask("masked_input", requests).items():
            try:
                unmasker.add_masked(client, data)
            except ProtocolError as exc:
                log.warning("%s: masked input of client %s left out: %s", self.what, client, exc)
                continue
            sent += len(data)
        self.strategy.require(len(unmasker.senders), len(self.node_of), self.what)
        return sent

    def _start(self, requests: dict[int, bytes]) -> None:
        """The exchange's nodes, number and tag, and the deployed state's record."""
        strategy = self.strategy
        self.node_of = {client: node for node, client in strategy.nodes_for(sorted(requests)).items()}
        strategy.server_round += 1
        self.number = strategy.server_round
        first = next(iter(requests.values()), None)
        self.exchange = wire.field(wire.load(first), "tag", bytes) if first is not None else b""
        self.model = strategy.deployed_record(self.state)

    def _message(self, step: str, client: int, request: bytes) -> Message:
        content = {SECAGG: ConfigRecord({"step": step, "exchange": self.exchange,
                                         "client": client, "request": request})}
        if step == ADVERT:
            content.update({RUN: self.strategy._run_config(), MODEL: self.model,
                            STEP: ConfigRecord({"task": self.task,
                                                "round": -1 if self.rnd is None else self.rnd,
                                                "client": client})})
        return Message(RecordDict(content), self.node_of[client], SECAGG_TYPE,
                       group_id=str(self.number))


def answer_of(reply: Message, step: str) -> bytes | None:
    """The answer bytes a node's reply to ``step`` carries; ``None`` (logged) for an
    error reply or anything else."""
    node = reply.metadata.src_node_id
    if reply.has_error():
        log.warning("node %s: error reply to secure aggregation %s (%s)", node, step,
                    reply.error.reason)
        return None
    try:
        record = reply.content[SECAGG]
        answer = record["answer"]
        if record["step"] != step or not isinstance(answer, bytes):
            raise ValueError(f"an answer to {record['step']!r} of type {type(answer).__name__}")
    except (KeyError, TypeError, ValueError) as exc:  # no such record, or of the wrong shape
        log.warning("node %s: secure aggregation %s reply left out (%s: %s)", node, step,
                    type(exc).__name__, exc)
        return None
    return answer
