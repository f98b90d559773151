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
    seconds until every message has its reply or ``timeout`` seconds have passed.

    Attributes:
        sent: message id -> destination node id of every pushed message.
        missing: after iteration, the node ids whose reply never came.
    """

    def __init__(self, grid: Grid, messages: Iterable[Message], timeout: float,
                 poll: float = 0.05):
        self.grid, self.timeout, self.poll = grid, timeout, poll
        messages = list(messages)  # the requests (not the replies): one per node
        destinations = [m.metadata.dst_node_id for m in messages]
        self.sent: dict[str, int] = dict(zip(grid.push_messages(messages), destinations))
        self.missing: list[int] = []
        self._used = False

    def __iter__(self) -> Iterator[Message]:
        if self._used:
            raise RuntimeError("a ReplyStream can be iterated once")
        self._used = True
        waiting = set(self.sent)
        deadline = time.monotonic() + self.timeout
        while waiting:
            got = list(self.grid.pull_messages(list(waiting)))
            for reply in got:
                waiting.discard(reply.metadata.reply_to_message_id)
                yield reply
            if not got:  # replies that are there are taken even after the deadline
                if time.monotonic() >= deadline:
                    break
                time.sleep(self.poll)
        self.missing = sorted(self.sent[i] for i in waiting)
