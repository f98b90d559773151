"""Pure-torch versions of every lorm_ext op: the oracle the tests compare against.

Written for clarity, not speed: everything is computed in float64 from the
definitions in docs/ops.md. These functions do not validate their arguments; use
the ops in :mod:`lorm_ext` for that.
"""

from __future__ import annotations

import torch


def _rows64(x: torch.Tensor) -> torch.Tensor:
    """``x (..., d)`` as float64 rows ``(n, d)``."""
    return x.reshape(-1, x.shape[-1]).to(torch.float64)


def gram_update(acc: torch.Tensor, x: torch.Tensor) -> None:
    """``acc (d, d) += x.T @ x`` or ``acc (d,) += (x * x).sum(rows)``."""
    rows = _rows64(x)
    update = rows.T @ rows if acc.dim() == 2 else (rows * rows).sum(0)
    acc += update.to(acc.dtype)


def lowrank_gram_update(acc: torch.Tensor, x: torch.Tensor, a: torch.Tensor,
                        diag_acc: torch.Tensor | None = None) -> None:
    """``acc (r, r) += z.T @ z`` with ``z = x @ a.T``; ``diag_acc (d,) += (x * x).sum(rows)``."""
    rows = _rows64(x)
    z = rows @ a.to(torch.float64).T
    acc += (z.T @ z).to(acc.dtype)
    if diag_acc is not None:
        diag_acc += (rows * rows).sum(0).to(diag_acc.dtype)


def inspect_terms(ts: list[torch.Tensor], symmetric: list[int]) -> torch.Tensor:
    """``(n, 4)`` float64, row k for ``ts[k]``: max ``|t|`` (NaNs skipped, Inf counts),
    all finite (1/0), exactly symmetric off the diagonal (1/0; always 1 unless
    ``symmetric[k]``), smallest diagonal entry (of a square ``t``; of any entry of a
    flat one; NaNs skipped; +inf when there is none)."""
    rows = []
    for t, sym in zip(ts, symmetric):
        t64 = t.to(torch.float64)
        magnitudes = t64.abs().nan_to_num(nan=0.0, posinf=float("inf"))
        max_abs = magnitudes.max().item() if t64.numel() else 0.0
        diagonal = (torch.diagonal(t64) if sym else t64.reshape(-1))
        diagonal = diagonal[~diagonal.isnan()]
        smallest = diagonal.min().item() if diagonal.numel() else float("inf")
        # t[i, j] == t[j, i] for every i != j (a NaN pair counts as unequal)
        same = bool(torch.equal(t.triu(1), t.mT.triu(1))) if sym else True
        rows.append([max_abs, float(bool(torch.isfinite(t64).all())), float(same), smallest])
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), 4)


NEGATIVE_RTOL = 1e-4  # as kNegativeRtol in csrc/solve.cpp

# Verdicts of add_terms (csrc/checked_add.h): the first failing check counts.
ACCEPTED, NOT_FINITE, NOT_SYMMETRIC, NEGATIVE_DIAGONAL, WOULD_OVERFLOW, NEGATIVE_CURVATURE = range(6)
PLAIN, DIAGONAL_GRAM, SQUARE_GRAM = range(3)


def add_terms(sums: list[torch.Tensor], ts: list[torch.Tensor], kinds: list[int],
              limits: list[float], negative_rtol: float, probes: list[torch.Tensor]) -> torch.Tensor:
    """The server's checked add: ``(n, 5)`` float64, the :func:`inspect_terms` row of
    ``ts[k]`` and its verdict; ``sums[k] += ts[k]`` for every k iff every verdict is
    ``ACCEPTED``. Checks: finite; exactly symmetric (``kinds[k] == SQUARE_GRAM``);
    smallest diagonal entry of a Gram at least ``-negative_rtol * max|t|``; ``max|t|``
    at most ``limits[k]``; then, only when all of those pass, ``v.T q v`` for the probe
    columns of each square Gram at least ``-negative_rtol * sum|diag q|``."""
    found = inspect_terms(ts, [int(k == SQUARE_GRAM) for k in kinds])
    verdicts = []
    for row, kind, limit in zip(found.tolist(), kinds, limits):
        max_abs, finite, same, smallest = row
        verdicts.append(NOT_FINITE if not finite else NOT_SYMMETRIC if not same
                        else NEGATIVE_DIAGONAL if kind != PLAIN and smallest < -negative_rtol * max_abs
                        else WOULD_OVERFLOW if not max_abs <= limit else ACCEPTED)
    if all(v == ACCEPTED for v in verdicts):
        squares = iter(probes)
        for k, (t, kind) in enumerate(zip(ts, kinds)):
            if kind != SQUARE_GRAM:
                continue
            v = next(squares).to(torch.float64)  # (P, d): one direction per row
            curvature = ((v @ t.to(torch.float64)) * v).sum(1)
            if bool((curvature < -negative_rtol * t.diagonal().to(torch.float64).abs().sum()).any()):
                verdicts[k] = NEGATIVE_CURVATURE
                break
    if all(v == ACCEPTED for v in verdicts):
        for s, t in zip(sums, ts):
            s.add_(t.to(s.dtype))
    return torch.cat([found, torch.tensor(verdicts, dtype=torch.float64).reshape(-1, 1)], dim=1)


def spd_solve(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``p @ pinv(q)`` in float64; ``q (..., d)`` means ``diag(q)``. Subnormal entries
    of ``q`` count as 0; an eigenvalue below ``-NEGATIVE_RTOL * max|eigenvalue|``
    raises ValueError (``q`` is not PSD)."""
    out_dtype = torch.promote_types(q.dtype, p.dtype)
    q64 = q.to(torch.float64)
    q64 = torch.where(q64.abs() < torch.finfo(torch.float64).tiny, 0.0, q64)
    if q.dim() == p.dim() - 1:
        q64 = torch.diag_embed(q64)
    w = torch.linalg.eigvalsh(q64) if q64.numel() else q64.new_zeros(1)
    if bool((w.amin(-1) < -NEGATIVE_RTOL * w.abs().amax(-1)).any()):
        raise ValueError("spd_solve: q is not positive semi-definite")
    return (p.to(torch.float64) @ torch.linalg.pinv(q64, hermitian=True)).to(out_dtype)
