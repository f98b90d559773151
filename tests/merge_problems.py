"""Random merge problems shared by the merge and aggregation tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

F64 = torch.float64


@dataclass
class Problem:
    xs: list[torch.Tensor]      # client inputs X_i (n_i, d)
    grams: list[torch.Tensor]   # raw G_i (d, d)
    As: list[torch.Tensor]      # (r, d)
    Bs: list[torch.Tensor]      # (o, r)
    Ws: list[torch.Tensor]      # (o, d)
    A: torch.Tensor             # shared (r, d) for the B-step
    alpha: float


def make_problem(d: int, o: int, r: int, rows: list[int], alpha: float, seed: int,
                 scales: list[float] | None = None) -> Problem:
    gen = torch.Generator().manual_seed(seed)
    scales = scales or [1.0] * len(rows)
    xs = [torch.randn(n, d, dtype=F64, generator=gen) * s for n, s in zip(rows, scales)]
    return Problem(
        xs=xs, grams=[x.T @ x for x in xs],
        As=[torch.randn(r, d, dtype=F64, generator=gen) for _ in xs],
        Bs=[torch.randn(o, r, dtype=F64, generator=gen) for _ in xs],
        Ws=[torch.randn(o, d, dtype=F64, generator=gen) for _ in xs],
        A=torch.randn(r, d, dtype=F64, generator=gen), alpha=alpha)


@st.composite
def problems(draw, max_d: int = 12, max_clients: int = 5):
    d = draw(st.integers(1, max_d))
    clients = draw(st.integers(1, max_clients))
    return make_problem(
        d=d, o=draw(st.integers(1, 6)), r=draw(st.integers(1, d)),
        rows=draw(st.lists(st.integers(0, 2 * d + 2), min_size=clients, max_size=clients)),
        alpha=draw(st.sampled_from([0.0, 0.3, 0.5, 1.0])), seed=draw(st.integers(0, 2**31 - 1)),
        scales=[draw(st.floats(0.1, 3.0)) for _ in range(clients)])


def regularized_matrix(g: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha G + (1 - alpha) diag(G) as a full matrix, written from the definition."""
    return alpha * g + (1 - alpha) * torch.diag(torch.diagonal(g))


def pinv_merge(ps: list[torch.Tensor], qs: list[torch.Tensor]) -> torch.Tensor:
    return sum(ps) @ torch.linalg.pinv(sum(qs), hermitian=True)
