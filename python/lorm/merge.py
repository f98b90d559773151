"""LoRM's closed-form merges on lists of client tensors: the math itself.

Every function computes in float64 and returns float32 unless ``dtype`` says
otherwise. Grams are the raw ``G_i = X_i.T @ X_i`` ``(d, d)`` (or, for ``alpha = 0``,
their diagonal ``(d,)``); the regularisation ``alpha * G + (1 - alpha) * diag(G)`` is
applied inside. Solves go through :func:`lorm_ext.spd_solve`, i.e. ``p @ pinv(q)``.

The client-side statistics builders (:func:`a_step_stats`, :func:`b_step_stats`,
:func:`full_stats`) produce the ``(p, q)`` pairs that :class:`lorm.aggregate.Aggregator`
sums; ``merge_*`` are the same sums and solve, on lists.
"""

from __future__ import annotations

from typing import Sequence

import torch

import lorm_ext

from .messages import SolveStats

F64 = torch.float64


def _check_alpha(alpha: float) -> float:
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return float(alpha)


def _same_length(**lists: Sequence) -> int:
    lengths = {name: len(values) for name, values in lists.items()}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise ValueError(f"need one entry per client in each list, got lengths {lengths}")
    return next(iter(lengths.values()))


def symmetric(m: torch.Tensor) -> torch.Tensor:
    """``(m + m.T) / 2``: exactly symmetric (IEEE addition commutes), as the server
    requires of every ``(d, d)`` q; float round-off can leave a computed Gram off by an ulp."""
    return (m + m.mT) * 0.5


def regularize_gram(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * G + (1 - alpha) * diag(G)`` in float64, exactly symmetric.

    Args:
        gram: ``(d, d)`` raw Gram, or its diagonal ``(d,)`` (only with ``alpha = 0``).
        alpha: in ``[0, 1]``; 1 is plain RegMean, 0 keeps only the diagonal.

    Returns:
        ``(d, d)``, or the ``(d,)`` diagonal when ``alpha == 0``.
    """
    alpha = _check_alpha(alpha)
    g = gram.to(F64)
    if g.dim() == 1:
        if alpha != 0.0:
            raise ValueError(f"alpha = {alpha} needs the full (d, d) Gram; got a diagonal (d,)")
        return g
    if g.dim() != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"a Gram must be (d, d) or (d,), got {tuple(gram.shape)}")
    diagonal = torch.diagonal(g)
    if alpha == 0.0:
        return diagonal.clone()
    out = alpha * symmetric(g)
    out.diagonal().add_((1.0 - alpha) * diagonal)
    return out


def weight_by(m: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """``m @ gram`` for a ``(d, d)`` gram, ``m * gram`` (column scaling) for a ``(d,)`` one."""
    return m.to(F64) @ gram if gram.dim() == 2 else m.to(F64) * gram


def project_gram(a: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """``H = A Gt A.T`` ``(r, r)`` for ``A`` ``(r, d)`` and a regularised Gram ``(d, d)`` or ``(d,)``."""
    return symmetric(weight_by(a, gram) @ a.to(F64).T)


def lowrank_h(a: torch.Tensor, zz: torch.Tensor, diagonal: torch.Tensor, alpha: float) -> torch.Tensor:
    """``H = alpha * Z.T Z + (1 - alpha) * A diag(G) A.T`` from the streamed statistics
    of :func:`lorm_ext.lowrank_gram_update` (``zz`` ``(r, r)``, ``diagonal`` ``(d,)``),
    equal to :func:`project_gram` of the regularised Gram without any ``(d, d)`` matrix."""
    alpha = _check_alpha(alpha)
    a64 = a.to(F64)
    return symmetric(alpha * zz.to(F64) + (1.0 - alpha) * (a64 * diagonal.to(F64)) @ a64.T)


def full_stats(w: torch.Tensor, gram: torch.Tensor, alpha: float) -> SolveStats:
    """RegMean statistics of a full matrix ``W`` ``(o, d)``: ``p = W Gt``, ``q = Gt``."""
    gt = regularize_gram(gram, alpha)
    return SolveStats(p=weight_by(w, gt), q=gt)


def a_step_stats(a: torch.Tensor, gram: torch.Tensor, alpha: float) -> SolveStats:
    """A-step statistics of a client's ``A_i`` ``(r, d)``: ``p = A_i Gt_i`` ``(r, d)``,
    ``q = Gt_i`` (``(d,)`` when ``alpha = 0``)."""
    return full_stats(a, gram, alpha)


def b_step_stats(b: torch.Tensor, h: torch.Tensor) -> SolveStats:
    """B-step statistics of a client's ``B_i`` ``(o, r)`` given ``H_i`` ``(r, r)``
    (:func:`project_gram` or :func:`lowrank_h`): ``p = B_i H_i``, ``q = H_i``."""
    h64 = symmetric(h.to(F64))
    return SolveStats(p=b.to(F64) @ h64, q=h64)


def solve_sums(stats: Sequence[SolveStats], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(sum p_i) @ pinv(sum q_i)``: the merge every closed form here reduces to."""
    p = sum(s.p.to(F64) for s in stats)
    q = sum(s.q.to(F64) for s in stats)
    return lorm_ext.spd_solve(q, p).to(dtype)


def merge_full(ws: Sequence[torch.Tensor], grams: Sequence[torch.Tensor], alpha: float, *,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """RegMean: ``W* = (sum_i W_i Gt_i)(sum_i Gt_i)^+`` for ``W_i`` ``(o, d)`` (the head,
    and the full-rank baseline)."""
    _same_length(ws=ws, grams=grams)
    return solve_sums([full_stats(w, g, alpha) for w, g in zip(ws, grams)], dtype)


def merge_a_step(as_: Sequence[torch.Tensor], grams: Sequence[torch.Tensor], alpha: float, *,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A-step: ``A* = (sum_i A_i Gt_i)(sum_i Gt_i)^+`` ``(r, d)``; B is shared and drops out."""
    _same_length(As=as_, grams=grams)
    return solve_sums([a_step_stats(a, g, alpha) for a, g in zip(as_, grams)], dtype)


def merge_b_step(bs: Sequence[torch.Tensor], a: torch.Tensor, grams: Sequence[torch.Tensor],
                 alpha: float, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """B-step: ``B* = (sum_i B_i H_i)(sum_i H_i)^+`` ``(o, r)`` with ``H_i = A Gt_i A.T``
    for the shared ``A`` ``(r, d)``."""
    _same_length(Bs=bs, grams=grams)
    hs = [project_gram(a, regularize_gram(g, alpha)) for g in grams]
    return solve_sums([b_step_stats(b, h) for b, h in zip(bs, hs)], dtype)


def merge_cross_task(deltas: Sequence[torch.Tensor], grams: Sequence[torch.Tensor], *,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(sum_t dW_t G_t)(sum_t G_t)^+`` for task residuals ``dW_t = B_t A_t`` ``(o, d)``
    and task Grams already regularised (``(d, d)`` or ``(d,)``)."""
    _same_length(deltas=deltas, grams=grams)
    stats = [SolveStats(p=weight_by(dw, g.to(F64)), q=g.to(F64)) for dw, g in zip(deltas, grams)]
    return solve_sums(stats, dtype)


def fedavg(mats: Sequence[torch.Tensor], weights: Sequence[float] | None = None, *,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Weighted average ``sum_i w_i M_i / sum_i w_i`` (uniform without weights)."""
    n = len(mats)
    w = torch.ones(n, dtype=F64) if weights is None else torch.as_tensor(weights, dtype=F64)
    _same_length(mats=mats, weights=list(w))
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {w.tolist()}")
    stacked = torch.stack([m.to(F64) for m in mats])
    return torch.tensordot(w / w.sum(), stacked, dims=1).to(dtype)


def fedavg_lora(as_: Sequence[torch.Tensor], bs: Sequence[torch.Tensor],
                weights: Sequence[float] | None = None, *,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """LoRA FedAvg baseline: average ``A`` ``(r, d)`` and ``B`` ``(o, r)`` separately."""
    _same_length(As=as_, Bs=bs)
    return fedavg(as_, weights, dtype=dtype), fedavg(bs, weights, dtype=dtype)


def running_mean(history: dict[str, torch.Tensor], current: dict[str, torch.Tensor],
                 task: int) -> dict[str, torch.Tensor]:
    """``(history + current) / (task + 1)`` per layer: the mean of ``task + 1`` residuals
    ``(o, d)`` when ``history`` sums the ``task`` earlier ones (empty at task 0)."""
    if task == 0:
        return dict(current)
    return {name: (history[name] + r) / (task + 1) for name, r in current.items()}
