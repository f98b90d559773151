"""spd_solve against p @ pinv(q) in float64."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lorm_ext
from conftest import devices


def spd_with_spectrum(eigenvalues: torch.Tensor, seed: int) -> torch.Tensor:
    d = eigenvalues.numel()
    gen = torch.Generator().manual_seed(seed)
    v, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen))
    q = v @ torch.diag(eigenvalues.double()) @ v.T
    return (q + q.T) / 2


def gram(n: int, d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, dtype=torch.float64, generator=gen)
    return x.T @ x


def rhs(batch: tuple[int, ...], m: int, d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 7)
    return torch.randn(*batch, m, d, dtype=torch.float64, generator=gen)


def pinv_solution(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    q64 = torch.diag_embed(q.double()) if q.dim() == p.dim() - 1 else q.double()
    return p.double() @ torch.linalg.pinv(q64, hermitian=True)


def relative_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double().cpu() - ref).norm() / ref.norm().clamp_min(1e-300)).item()


@pytest.mark.parametrize("device", devices())
@given(d=st.integers(1, 48), m=st.integers(1, 6), batch=st.lists(st.integers(1, 3), max_size=2),
       seed=st.integers(0, 2**31 - 1))
def test_well_conditioned(device, d, m, batch, seed):
    q = torch.stack([gram(2 * d + 4, d, seed + i) + torch.eye(d, dtype=torch.float64)
                     for i in range(math.prod(batch))]).reshape(*batch, d, d)
    p = rhs(tuple(batch), m, d, seed)
    x = lorm_ext.spd_solve(q.to(device), p.to(device))
    assert x.shape == p.shape and x.dtype == torch.float64
    assert relative_error(x, pinv_solution(q, p)) < 1e-10


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("d", [8, 64, 200])
def test_condition_1e12(device, d):
    q = spd_with_spectrum(torch.logspace(0, -12, d), seed=d)
    p = rhs((), 5, d, seed=d)
    x = lorm_ext.spd_solve(q.to(device), p.to(device))
    assert torch.isfinite(x).all()
    # Both sides amplify rounding by up to cond * eps ~ 1e-4; they agree far better.
    assert relative_error(x, pinv_solution(q, p)) < 1e-6


@pytest.mark.parametrize("device", devices())
@given(d=st.integers(2, 40), rank_fraction=st.floats(0.0, 0.9), seed=st.integers(0, 2**31 - 1))
def test_singular_gram(device, d, rank_fraction, seed):
    """n < d rows: the Gram is rank deficient; the answer is pinv's minimum-norm one."""
    n = int(rank_fraction * d)
    q = gram(n, d, seed)
    p = rhs((), 3, d, seed)
    x = lorm_ext.spd_solve(q.to(device), p.to(device))
    assert torch.isfinite(x).all()
    ref = pinv_solution(q, p)
    assert (x.double().cpu() - ref).abs().max().item() <= 1e-8 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("device", devices())
def test_batch_mixing_definite_singular_and_zero(device):
    d = 24
    q = torch.stack([gram(60, d, 1), gram(10, d, 2), torch.zeros(d, d, dtype=torch.float64),
                     spd_with_spectrum(torch.logspace(0, -12, d), 3)])
    p = rhs((4,), 2, d, 5)
    x = lorm_ext.spd_solve(q.to(device), p.to(device))
    ref = pinv_solution(q, p)
    assert torch.equal(x[2].cpu(), torch.zeros(2, d, dtype=torch.float64))
    for i in (0, 1, 3):
        assert relative_error(x[i], ref[i]) < 1e-6, i


@pytest.mark.parametrize("device", devices())
@given(d=st.integers(1, 30), batch=st.lists(st.integers(1, 3), max_size=2),
       zeros=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_diagonal_q(device, d, batch, zeros, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.rand(*batch, d, dtype=torch.float64, generator=gen) + 0.1
    q[torch.rand(q.shape, generator=gen) < zeros] = 0.0
    p = rhs(tuple(batch), 3, d, seed)
    x = lorm_ext.spd_solve(q.to(device), p.to(device))
    torch.testing.assert_close(x.cpu(), pinv_solution(q, p), rtol=1e-12, atol=1e-12)


def test_output_dtype_is_promoted_input_dtype():
    q = gram(20, 6, 0).float()
    p = rhs((), 2, 6, 0).float()
    x = lorm_ext.spd_solve(q, p)
    assert x.dtype == torch.float32
    assert relative_error(x, pinv_solution(q, p)) < 1e-6
    assert lorm_ext.spd_solve(q, p.double()).dtype == torch.float64


def test_empty_right_hand_side():
    q = gram(20, 6, 0)
    assert lorm_ext.spd_solve(q, torch.zeros(0, 6, dtype=torch.float64)).shape == (0, 6)
