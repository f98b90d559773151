"""spd_solve against p @ pinv(q) in float64."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lorm_ext
from bounds import assert_bound_tells_float32_apart, assert_pinv_solution, gamma, spd_solve_bound, unit_roundoff
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


def agreement_bound(q: torch.Tensor) -> float:
    """How far two backward-stable float64 solves of X q = p may be apart, normwise and
    relative to one of them: each is within b = spd_solve_bound(q) of the exact X (ours,
    and pinv's eigendecomposition), so 2 b / (1 - b); below a float32 answer's error, so
    an unrefined float32 factor cannot pass."""
    bound = spd_solve_bound(q)
    assert_bound_tells_float32_apart(q, 2 * bound / (1 - bound))
    return 2 * bound / (1 - bound)


@pytest.mark.parametrize("device", devices())
@given(d=st.integers(1, 48), m=st.integers(1, 6), batch=st.lists(st.integers(1, 3), max_size=2),
       seed=st.integers(0, 2**31 - 1))
def test_well_conditioned(device, d, m, batch, seed):
    q = torch.stack([gram(2 * d + 4, d, seed + i) + torch.eye(d, dtype=torch.float64)
                     for i in range(math.prod(batch))]).reshape(*batch, d, d)
    p = rhs(tuple(batch), m, d, seed)
    x = lorm_ext.spd_solve(q.to(device), p.to(device))
    assert x.shape == p.shape and x.dtype == torch.float64
    assert relative_error(x, pinv_solution(q, p)) <= agreement_bound(q)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("d", [8, 64, 200])
def test_condition_1e12(device, d):
    q = spd_with_spectrum(torch.logspace(0, -12, d), seed=d)
    p = rhs((), 5, d, seed=d)
    x = lorm_ext.spd_solve(q.to(device), p.to(device))
    assert torch.isfinite(x).all()
    # cond * eta >= 1 (d >= 64): float64 data do not determine X, so no forward error
    # bound exists; what a backward-stable solve guarantees is a small residual.
    assert_pinv_solution(x, q, p)


@pytest.mark.parametrize("device", devices())
@given(d=st.integers(2, 40), rank_fraction=st.floats(0.0, 0.9), seed=st.integers(0, 2**31 - 1))
def test_singular_gram(device, d, rank_fraction, seed):
    """n < d rows: the Gram is rank deficient; the answer is pinv's minimum-norm one."""
    n = int(rank_fraction * d)
    q = gram(n, d, seed)
    p = rhs((), 3, d, seed)
    x = lorm_ext.spd_solve(q.to(device), p.to(device))
    assert torch.isfinite(x).all()
    assert_pinv_solution(x, q, p)


@pytest.mark.parametrize("device", devices())
def test_batch_mixing_definite_singular_and_zero(device):
    d = 24
    q = torch.stack([gram(60, d, 1), gram(10, d, 2), torch.zeros(d, d, dtype=torch.float64),
                     spd_with_spectrum(torch.logspace(0, -12, d), 3)])
    p = rhs((4,), 2, d, 5)
    x = lorm_ext.spd_solve(q.to(device), p.to(device))
    assert torch.equal(x[2].cpu(), torch.zeros(2, d, dtype=torch.float64))
    for i in (0, 1, 3):
        assert_pinv_solution(x[i], q[i], p[i])
    assert relative_error(x[0], pinv_solution(q[0], p[0])) <= agreement_bound(q[0])


@pytest.mark.parametrize("device", devices())
@given(d=st.integers(1, 30), batch=st.lists(st.integers(1, 3), max_size=2),
       zeros=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_diagonal_q(device, d, batch, zeros, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.rand(*batch, d, dtype=torch.float64, generator=gen) + 0.1
    q[torch.rand(q.shape, generator=gen) < zeros] = 0.0
    p = rhs(tuple(batch), 3, d, seed)
    x = lorm_ext.spd_solve(q.to(device), p.to(device))
    # A diagonal q is solved entry by entry, p_j / q_j, by us and by pinv (whose eigh of a
    # diagonal matrix is exact): each at most two roundings from the exact quotient.
    ref = pinv_solution(q, p)
    assert ((x.cpu() - ref).abs() <= 2 * gamma(2, torch.float64) * ref.abs()).all()


def test_output_dtype_is_promoted_input_dtype():
    q = gram(20, 6, 0).float()
    p = rhs((), 2, 6, 0).float()
    x = lorm_ext.spd_solve(q, p)
    assert x.dtype == torch.float32
    # solved in float64 (within agreement_bound of pinv's answer), then rounded to float32
    assert relative_error(x, pinv_solution(q, p)) <= agreement_bound(q.double()) + unit_roundoff(torch.float32)
    assert lorm_ext.spd_solve(q, p.double()).dtype == torch.float64


def test_empty_right_hand_side():
    q = gram(20, 6, 0)
    assert lorm_ext.spd_solve(q, torch.zeros(0, 6, dtype=torch.float64)).shape == (0, 6)


# The mixed-precision path (CPU, d >= mixed_min_dim): a float32 Cholesky factor refined
# in float64, used only where refinement converges; every other matrix takes the float64
# path. Tested from d = 128 (the default threshold, 1024, is a speed choice only).

MIXED_DIM = 128


def mixed_solve(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return lorm_ext.spd_solve(q, p, mixed_min_dim=MIXED_DIM)


def float64_cholesky_solution(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """What the float64 Cholesky path on the CPU computes for one (d, d) q, op for op
    (as a batch of one, the way the kernel sees a matrix of a batch)."""
    factor, _ = torch.linalg.cholesky_ex(q.unsqueeze(0))
    y = torch.linalg.solve_triangular(factor, p.unsqueeze(0).mT, upper=False)
    return torch.linalg.solve_triangular(factor.mT, y, upper=True).mT[0]


def with_condition(d: int, cond: float, seed: int) -> torch.Tensor:
    return spd_with_spectrum(torch.logspace(0, -math.log10(cond), d), seed)


@given(d=st.integers(MIXED_DIM, MIXED_DIM + 40), m=st.integers(1, 6), seed=st.integers(0, 2**31 - 1))
def test_mixed_precision_well_conditioned(d, m, seed):
    q = gram(2 * d + 4, d, seed) + torch.eye(d, dtype=torch.float64)
    p = rhs((2,), m, d, seed)
    x = mixed_solve(torch.stack([q, 2 * q]), p)
    assert relative_error(x, pinv_solution(torch.stack([q, 2 * q]), p)) <= agreement_bound(q)


@pytest.mark.parametrize("d", [MIXED_DIM, 300])
@pytest.mark.parametrize("cond", [1e0, 1e3, 1e6])
def test_mixed_precision_is_refined_to_float64_accuracy(d, cond):
    """Matrices a float32 factor can serve: the answer is the float64 one (within the
    conditioning) although it is not the float64 Cholesky's bit for bit, which shows the
    refined path ran."""
    q, p = with_condition(d, cond, seed=d), rhs((), 4, d, seed=d)
    x = mixed_solve(q, p)
    assert relative_error(x, pinv_solution(q, p)) <= agreement_bound(q)
    assert not torch.equal(x, float64_cholesky_solution(q, p))
    x64 = lorm_ext.spd_solve(q, p, mixed_precision=False)  # the switch: float64 Cholesky
    assert torch.equal(x64, float64_cholesky_solution(q, p))


@pytest.mark.parametrize("d", [MIXED_DIM, 300])
def test_ill_conditioned_falls_back_to_float64(d):
    """cond 1e8: refinement cannot converge from a float32 factor, so the float64 path
    answers, bit for bit as with mixed_precision=False (whose bits the refined path does
    not reproduce: test above); cond 1e12: the float64 path's pinv fallback."""
    q8, q12, p = with_condition(d, 1e8, 1), with_condition(d, 1e12, 2), rhs((2,), 4, d, seed=3)
    q = torch.stack([q8, q12])
    x = mixed_solve(q, p)
    assert torch.equal(x, lorm_ext.spd_solve(q, p, mixed_precision=False))
    assert_pinv_solution(x[0], q8, p[0])
    assert_pinv_solution(x[1], q12, p[1])


def test_batch_mixing_refined_and_fallback_matrices():
    d = MIXED_DIM + 16
    good, bad = with_condition(d, 10.0, 4), with_condition(d, 1e9, 5)
    zero = torch.zeros(d, d, dtype=torch.float64)
    q, p = torch.stack([good, bad, zero, good]), rhs((4,), 3, d, seed=6)
    x = mixed_solve(q, p)
    assert relative_error(x[[0, 3]], pinv_solution(q[[0, 3]], p[[0, 3]])) <= agreement_bound(good)
    assert torch.equal(x[1], lorm_ext.spd_solve(q, p, mixed_precision=False)[1])
    assert torch.equal(x[2], torch.zeros_like(x[2]))  # pinv(0) = 0


def test_default_threshold_keeps_small_matrices_in_float64():
    """Below mixed_min_dim (default 1024) the float64 Cholesky answers, bit for bit."""
    q, p = with_condition(MIXED_DIM, 10.0, 7), rhs((), 2, MIXED_DIM, seed=7)
    assert lorm_ext.ops.MIXED_MIN_DIM == 1024
    assert torch.equal(lorm_ext.spd_solve(q, p), float64_cholesky_solution(q, p))
    assert not torch.equal(mixed_solve(q, p), float64_cholesky_solution(q, p))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "1024"])
def test_mixed_min_dim_must_be_a_positive_int(bad):
    q = torch.eye(4, dtype=torch.float64)
    with pytest.raises(lorm_ext.LormInputError, match="mixed_min_dim must be an int >= 1"):
        lorm_ext.spd_solve(q, torch.ones(1, 4), mixed_min_dim=bad)
