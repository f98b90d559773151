"""Secure aggregation around any transport: :class:`SecureAggregation` carries each
round and task end through lorm.secagg's four steps on the transport's
:meth:`~lorm.fcil.transport.Transport.courier`, so the server half ends up with the
sums alone; evaluations (counts of the deployed model) go through the transport as
they are."""

from __future__ import annotations

import torch

from ..aggregate import Aggregator
from ..secagg.fixed_point import SIGNIFICAND_BITS
from .federation import Federation
from .transport import State, Transport

SECAGG = "secagg+"


def secured(transport: Transport, federation: Federation) -> Transport:
    """``transport`` itself, or wrapped when the config sets ``secure_aggregation``."""
    if federation.config.secure_aggregation == SECAGG:
        return SecureAggregation(transport, federation)
    return transport


class SecureAggregation(Transport):
    """``inner``'s exchanges with the statistics masked (lorm.secagg)."""

    def __init__(self, inner: Transport, federation: Federation):
        self.inner, self.config = inner, federation.config
        self.is_main = inner.is_main

    def __getattr__(self, name):  # what the inner transport offers beyond the interface
        return getattr(self.inner, name)

    def round(self, task, rnd, clients, state, aggregator) -> int:
        return self._exchange(task, rnd, clients, state, aggregator)

    def task_end(self, task, clients, state, aggregator) -> int:
        return self._exchange(task, None, clients, state, aggregator)

    def _exchange(self, task: int, rnd: int | None, clients: list[int], state: State,
                  aggregator: Aggregator) -> int:
        from ..secagg.exchange import (
            secure_exchange,  # needs the secagg extra's packages
        )
        tag = f"lorm/seed={self.config.seed}/task={task}/round={rnd}/{aggregator.factor}".encode()
        return secure_exchange(self.inner.courier(task, rnd, state), list(clients), tag, aggregator,
                               self._finer_wire_dtype(), self.config.secagg_threshold,
                               self.config.secagg_neighbours)

    def _finer_wire_dtype(self) -> torch.dtype:
        """Of ``wire_dtype`` and ``wire_gram_dtype``, the one with more significand bits:
        the ring keeps what the finer of them carries."""
        dtypes = [getattr(torch, self.config.wire_dtype), getattr(torch, self.config.wire_gram_dtype)]
        return max(dtypes, key=lambda d: SIGNIFICAND_BITS[d])

    def evaluate(self, task, serving) -> list[float]:
        return self.inner.evaluate(task, serving)

    def evaluate_live(self, task, state) -> float:
        return self.inner.evaluate_live(task, state)

    def agree(self, tensors, phase) -> None:
        self.inner.agree(tensors, phase)
