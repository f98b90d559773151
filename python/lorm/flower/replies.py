"""Replies handed over one at a time as they arrive, never collected into a list.

Flower's ``Grid.send_and_receive`` returns every reply of a round at once; a LoRM
server only ever adds a reply into running sums and drops it, so :class:`ReplyStream`
pushes the messages and yields each reply as ``pull_messages`` hands it over. After
iteration, :attr:`ReplyStream.missing` names the nodes that did not answer in time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from flwr.app import Message
from flwr.serverapp import Grid


class ReplyStream:
    """Iterable over the replies to ``messages``: push once, then pull every ``poll``
    seconds until every message has its reply or ``timeout`` seconds have passed; then
    re-send the unanswered ones up to ``retries`` times (a reply lost on the way; the
    first reply to any copy counts, later ones are not pulled).

    Attributes:
        sent: message id -> destination node id of every pushed message.
        missing: after iteration, the node ids whose reply never came.
    """

    def __init__(self, grid: Grid, messages: Iterable[Message], timeout: float,
                 poll: float = 0.05, retries: int = 0):
        self.grid, self.timeout, self.poll, self.retries = grid, timeout, poll, retries
        self._requests = list(messages)  # the requests (not the replies): one per node
        self.sent: dict[str, int] = {}
        self._request_of: dict[str, int] = {}  # message id -> index of its request
        self._push(range(len(self._requests)))
        self.missing: list[int] = []
        self._used = False

    def _push(self, indices) -> set[str]:
        copies = [self._requests[i] if i not in self._request_of.values() else
                  Message(self._requests[i].content, self._requests[i].metadata.dst_node_id,
                          self._requests[i].metadata.message_type,
                          group_id=self._requests[i].metadata.group_id)
                  for i in indices]
        ids = list(self.grid.push_messages(copies))
        for msg_id, i, msg in zip(ids, indices, copies):
            self.sent[msg_id] = msg.metadata.dst_node_id
            self._request_of[msg_id] = i
        return set(ids)

    def __iter__(self) -> Iterator[Message]:
        if self._used:
            raise RuntimeError("a ReplyStream can be iterated once")
        self._used = True
        waiting, answered = set(self.sent), set()
        retries, deadline = self.retries, time.monotonic() + self.timeout
        while waiting:
            got = list(self.grid.pull_messages(list(waiting)))
            for reply in got:
                request = self._request_of.get(reply.metadata.reply_to_message_id)
                if request is None or request in answered:
                    continue
                answered.add(request)
                waiting -= {m for m, i in self._request_of.items() if i == request}
                yield reply
            if not got:  # replies that are there are taken even after the deadline
                if time.monotonic() >= deadline:
                    if not retries:
                        break
                    retries -= 1
                    waiting |= self._push(sorted({self._request_of[m] for m in waiting}))
                    deadline = time.monotonic() + self.timeout
                    continue
                time.sleep(self.poll)
        self.missing = sorted(self._requests[i].metadata.dst_node_id
                              for i in range(len(self._requests)) if i not in answered)
