"""Secure aggregation over torch.distributed ranks: :class:`TorchrunCourier`."""

from __future__ import annotations

import base64
import math

import numpy as np
import torch
import torch.distributed as dist

from ..distributed import (
    DistContext,
    all_gather_json,
    all_reduce_numbers,
    collective,
    shard,
)
from . import fixed_point
from .exchange import MASKED_INPUT, Courier, HostedClients


class TorchrunCourier(Courier):
    """Each rank answers for its share of the clients; the answers are all-gathered so
    every rank's server half sees the same, and the masked inputs are summed on each
    rank and all-reduced (a rank's partial sum is a sum of masked vectors too)."""

    def __init__(self, hosted: HostedClients, ctx: DistContext, device: torch.device):
        self.hosted, self.ctx, self.device = hosted, ctx, device

    def ask(self, step, requests):
        mine = {c: self.hosted.answer(step, c, requests[c]) for c in shard(sorted(requests), self.ctx)}
        gathered = all_gather_json({str(c): base64.b64encode(a).decode() for c, a in mine.items()},
                                   self.ctx, f"secure aggregation: {step}", self.device)
        return {int(c): base64.b64decode(a) for part in gathered for c, a in part.items()}

    def gather_masked(self, requests, unmasker) -> int:
        mine = {c: self.hosted.answer(MASKED_INPUT, c, requests[c])
                for c in shard(sorted(requests), self.ctx)}
        partial = np.zeros(unmasker.layout.numel, dtype=np.uint64)
        for data in mine.values():
            partial += fixed_point.unpack(data, unmasker.layout.numel, unmasker.bits)
        partial &= fixed_point.ring_mask(unmasker.bits)
        if unmasker.bits + max(1, math.ceil(math.log2(self.ctx.world))) > 63:
            raise ValueError(f"a ring of {unmasker.bits} bits cannot be all-reduced over "
                             f"{self.ctx.world} ranks in int64")
        buffer = torch.from_numpy(partial.view(np.int64).copy()).to(self.device)
        collective(self.ctx, "secure aggregation: all-reduce of the masked inputs",
                   lambda: dist.all_reduce(buffer))
        senders = all_gather_json(sorted(mine), self.ctx, "secure aggregation: senders", self.device)
        unmasker.add_partial(buffer.cpu().numpy().view(np.uint64), [c for part in senders for c in part])
        sent = all_reduce_numbers([sum(len(d) for d in mine.values())], self.ctx,
                                  "secure aggregation: byte count", self.device)
        return int(sent[0])
