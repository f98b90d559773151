"""Private test infrastructure (it reaches into Flower's message internals; not part of
lorm's API): an in-process Flower ``Grid``: nodes are ``(node id, partition id)`` pairs whose
``ClientApp`` runs in this process when a message is pulled. For tests and
benchmarks of the server (100 nodes without 100 processes); faults are knobs:

- :meth:`die_after`: a node answers its first ``n`` messages, then never again (a node
  that dies mid-round);
- ``tamper``: ``fn(node_id, reply) -> reply`` rewrites replies (poisoned, wrong task);
- :meth:`join` adds nodes between exchanges (a late joiner).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

SERVER_NODE_ID = 1  # the SuperLink's node id, the sender of every instruction


class LocalGrid(Grid):
    """``partitions[i]`` is the partition id of node ``node_ids[i]``; ``app`` runs them."""

    def __init__(self, app: ClientApp, partitions: Iterable[int], first_node_id: int = 1001):
        self.app = app
        self.nodes: dict[int, Context] = {}
        self.answers_left: dict[int, int] = {}  # node id -> messages it still answers
        self.to_lose: dict[int, int] = {}  # node id -> replies still to lose on the way
        self.tamper: Callable[[int, Message], Message] | None = None
        self._pending: dict[str, Message] = {}
        self._next_id = first_node_id
        self._run: Run | None = None
        # Message() stamps run, sender and task from the process's task identity, which
        # a real ServerApp process has set; an in-process grid sets one.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SERVER_NODE_ID, 1
        self.join(partitions)

    def join(self, partitions: Iterable[int]) -> list[int]:
        """Adds a node per partition id; returns their node ids."""
        added = []
        for part in partitions:
            node = self._next_id
            self._next_id += 1
            self.nodes[node] = Context(run_id=1, node_id=node, node_config={"partition-id": part},
                                       state=RecordDict(), run_config={})
            added.append(node)
        return added

    def die_after(self, node: int, answered: int) -> None:
        """Node ``node`` answers ``answered`` more messages, then none."""
        self.answers_left[node] = answered

    def lose(self, node: int, replies: int) -> None:
        """The next ``replies`` replies of ``node`` are computed, then lost on the way."""
        self.to_lose[node] = replies

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            if msg.metadata.dst_node_id not in self.nodes:
                raise ValueError(f"no node {msg.metadata.dst_node_id}")
            self._pending[msg.metadata.message_id] = msg
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Runs the ClientApp for one pending message per call (replies arrive one by
        one, as they do from a SuperLink); a dead node's message stays pending."""
        for msg_id in list(message_ids):
            msg = self._pending.get(msg_id)
            if msg is None or self.answers_left.get(msg.metadata.dst_node_id, 1) <= 0:
                continue
            del self._pending[msg_id]
            node = msg.metadata.dst_node_id
            if node in self.answers_left:
                self.answers_left[node] -= 1
            reply = self.app(msg, self.nodes[node])
            if self.tamper is not None:
                reply = self.tamper(node, reply)
            if self.to_lose.get(node, 0) > 0:
                self.to_lose[node] -= 1
                return []
            return [reply]
        return []

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        ids = list(self.push_messages(messages))
        out = []
        while True:
            got = list(self.pull_messages(ids))
            if not got:
                return out
            out.extend(got)
