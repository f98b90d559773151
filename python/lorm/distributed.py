"""Scale-out on torch.distributed: clients sharded over ranks, sums all-reduced.

Launched by ``torchrun --nproc_per_node=P -m lorm run ...`` (gloo on CPU, NCCL with one
GPU per rank). Each rank trains its share of the round's clients and adds their
updates into a local :class:`~lorm.aggregate.Aggregator`; :func:`all_reduce_aggregator`
sums those partial sums across ranks in one flattened buffer, and every rank then runs
the same deterministic solve, so all ranks hold identical weights without a broadcast
(:func:`check_identical` asserts it with a checksum every round).
"""

from __future__ import annotations

import faulthandler
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Sequence, TypeVar

import torch
import torch.distributed as dist

from .aggregate import Aggregator

T = TypeVar("T")
F64 = torch.float64


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    timeout_s: float = 600.0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(timeout_s: float, use_cuda: bool) -> DistContext:
    """Joins the process group torchrun describes in the environment (or none)."""
    if not launched_by_torchrun():
        return DistContext(timeout_s=timeout_s)
    if not faulthandler.is_enabled():  # a rank killed by a signal says where it was
        faulthandler.enable()
    if not dist.is_initialized():
        # torch.distributed.nn.functional captures the live WORLD group in its defaults if
        # it is first imported after init (torchvision pulls it in through torch._dynamo);
        # that reference outlives destroy_process_group, so gloo's threads would run on
        # into interpreter shutdown and may abort the process. Imported now, it holds None.
        import torch.distributed.nn  # noqa: F401
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo",
                                timeout=timedelta(seconds=timeout_s))
    return DistContext(dist.get_rank(), dist.get_world_size(), timeout_s)


def shard(items: Sequence[T], ctx: DistContext) -> list[T]:
    """This rank's share: every ``world``-th item starting at ``rank`` (deterministic)."""
    return list(items[ctx.rank::ctx.world])


def collective(ctx: DistContext, phase: str, fn: Callable[[], T]) -> T:
    """Runs a collective; a failure (a peer died, or hung past the timeout) becomes an
    error naming this rank and the phase."""
    try:
        return fn()
    except Exception as exc:  # gloo/NCCL raise several types for a lost peer
        raise RuntimeError(
            f"rank {ctx.rank} of {ctx.world}: {phase} failed: another rank stopped or did not "
            f"answer within {ctx.timeout_s:.0f} s ({type(exc).__name__}: {exc})") from exc


def all_reduce_aggregator(agg: Aggregator, ctx: DistContext, phase: str, device) -> None:
    """Sums every rank's partial sums into every rank's ``agg`` (ranks with no client
    contribute zeros of the agreed shapes)."""
    if not ctx.enabled:
        return
    sums, layers = agg.partial_sums()
    spec = {key: list(value.shape) for key, value in sums.items()}
    gathered = all_gather_json({"spec": spec, "layers": layers}, ctx,
                               f"{phase}: exchanging shapes", device)
    union: dict[str, tuple] = {}
    for other in gathered:
        union.update({key: tuple(shape) for key, shape in other["spec"].items()})
    names = next((other["layers"] for other in gathered if other["layers"]), [])
    keys = sorted(union)
    parts = [sums[k].to(F64).flatten() if k in sums else torch.zeros(int(torch.Size(union[k]).numel()),
                                                                     dtype=F64, device=device)
             for k in keys]
    counts = torch.tensor([agg.num_clients, agg.num_samples], dtype=F64, device=device)
    buffer = torch.cat([p.to(device) for p in parts] + [counts])
    collective(ctx, f"{phase}: all-reduce of the sums", lambda: dist.all_reduce(buffer))
    combined, offset = {}, 0
    for key in keys:
        size = int(torch.Size(union[key]).numel())
        combined[key] = buffer[offset:offset + size].reshape(union[key]).clone()
        offset += size
    agg.replace_sums(combined, names, int(buffer[-2].item()), int(buffer[-1].item()))


def all_gather_json(value, ctx: DistContext, phase: str, device) -> list:
    """Every rank's JSON-serialisable ``value``, in rank order. Travels as UTF-8 bytes in
    uint8 tensors (two all-gathers: lengths, then padded bytes): nothing is unpickled."""
    payload = torch.tensor(list(json.dumps(value).encode()), dtype=torch.uint8, device=device)
    length = torch.tensor([payload.numel()], dtype=torch.int64, device=device)
    lengths = [torch.empty_like(length) for _ in range(ctx.world)]
    collective(ctx, phase, lambda: dist.all_gather(lengths, length))
    longest = max(int(n) for n in lengths)
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[:payload.numel()] = payload
    everyone = [torch.empty_like(padded) for _ in range(ctx.world)]
    collective(ctx, phase, lambda: dist.all_gather(everyone, padded))
    return [json.loads(bytes(t[:int(n)].cpu().tolist()).decode()) for t, n in zip(everyone, lengths)]


def all_reduce_numbers(values: Sequence[float], ctx: DistContext, phase: str, device) -> list[float]:
    """Element-wise sum of a few numbers over ranks."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(list(values), dtype=F64, device=device)
    collective(ctx, phase, lambda: dist.all_reduce(t))
    return t.tolist()


def check_identical(tensors: dict[str, torch.Tensor], ctx: DistContext, phase: str, device) -> None:
    """All ranks must hold the same weights: compares a float64 checksum per tensor and
    names the first tensor that differs."""
    if not ctx.enabled:
        return
    names = sorted(tensors)
    values = [tensors[name] for name in names]
    mine = torch.stack([t.detach().to(F64).sum() for t in values]
                       + [t.detach().to(F64).abs().sum() for t in values]).to(device)
    everyone = [torch.empty_like(mine) for _ in range(ctx.world)]
    collective(ctx, f"{phase}: weight checksum", lambda: dist.all_gather(everyone, mine))
    differs = torch.stack([other != everyone[0] for other in everyone[1:]]).any(0)
    if bool(differs.any()):
        index = int(differs.nonzero()[0]) % len(values)
        raise RuntimeError(f"rank {ctx.rank}: {phase}: ranks hold different weights after the "
                           f"merge (first: {names[index]!r}); the deterministic solve "
                           "diverged")


def barrier(ctx: DistContext, phase: str) -> None:
    if ctx.enabled:
        collective(ctx, phase, dist.barrier)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
