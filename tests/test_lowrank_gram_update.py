"""lowrank_gram_update against the float64 reference (the B-step statistic)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lorm_ext
from bounds import assert_within, diag_gram_bound, gamma
from conftest import devices
from helpers import ACC_DTYPES, assert_no_worse_than_torch, make_rows, row_tensors, rows64


def working_dtype(device: str) -> torch.dtype:
    """The CPU kernels compute in float64; the fused CUDA kernel in float32 registers."""
    return torch.float64 if device == "cpu" else torch.float32


def projected_gram_bound(rows: torch.Tensor, a: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Componentwise bound (r, r) on the rounding error of Z^T Z with Z = rows a^T, (n, d)
    rows and (r, d) a, computed in `dtype` in any order: each z entry is a d-term dot
    product (gamma(d + 1) |rows| |a|^T, one more for a's cast), and each of Z^T Z an
    n-term sum of their products, so to first order gamma(n + 2d + 2) W^T W with
    W = |rows| |a|^T (Higham eq. 3.13 applied twice)."""
    w = rows.double().cpu().abs() @ a.double().cpu().abs().T
    return gamma(rows.shape[0] + 2 * rows.shape[1] + 2, dtype) * (w.T @ w)


def projection(r: int, d: int, seed: int, dtype=torch.float32, device="cpu") -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 1)
    return (torch.randn(r, d, generator=gen) / d**0.5).to(dtype).to(device)


@pytest.mark.parametrize("device", devices())
@given(spec=row_tensors(), acc_dtype=st.sampled_from(ACC_DTYPES), with_diag=st.booleans(),
       rank_fraction=st.floats(0.0, 1.0), a_dtype=st.sampled_from([torch.float32, torch.float64]))
def test_matches_reference(device, spec, acc_dtype, with_diag, rank_fraction, a_dtype):
    d = spec["d"]
    r = max(1, round(rank_fraction * d))
    x = make_rows(**spec, device=device)
    a = projection(r, d, spec["seed"], a_dtype, device)
    acc = torch.zeros(r, r, dtype=acc_dtype, device=device)
    diag = torch.zeros(d, dtype=acc_dtype, device=device) if with_diag else None
    lorm_ext.lowrank_gram_update(acc, x, a, diag)

    rows = rows64(x)
    z = rows @ a.double().cpu().T
    plain_rows = x.cpu().reshape(-1, d).to(acc_dtype)
    plain_z = plain_rows @ a.cpu().to(acc_dtype).T
    assert_no_worse_than_torch(acc, z.T @ z, plain_z.T @ plain_z, acc_dtype)
    if with_diag:
        assert_no_worse_than_torch(diag, (rows * rows).sum(0), (plain_rows**2).sum(0), acc_dtype)


@pytest.mark.parametrize("device", devices())
@given(spec=row_tensors(max_lead_dims=1), chunks=st.integers(1, 5))
def test_streaming_in_chunks_equals_one_update(device, spec, chunks):
    d = spec["d"]
    x = make_rows(**spec, device=device).reshape(-1, d)
    a = projection(min(d, 4), d, spec["seed"], device=device)
    whole, whole_diag = torch.zeros(a.shape[0], a.shape[0], dtype=torch.float64, device=device), \
        torch.zeros(d, dtype=torch.float64, device=device)
    lorm_ext.lowrank_gram_update(whole, x, a, whole_diag)
    parts, parts_diag = torch.zeros_like(whole), torch.zeros_like(whole_diag)
    for part in torch.tensor_split(x, chunks):
        lorm_ext.lowrank_gram_update(parts, part, a, parts_diag)
    # the same products summed in two orders: each within the bound of the exact sums
    work, rows = working_dtype(device), rows64(x)
    assert_within(parts, whole, 2 * projected_gram_bound(rows, a, work))
    assert_within(parts_diag, whole_diag, 2 * diag_gram_bound(rows, work))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("r", [1, 8, 32, 33])
def test_equals_projected_full_gram(device, r):
    """H = A G A.T: the low-rank statistic is the full Gram seen through A."""
    d = 96
    x = make_rows((3, 50), d, torch.float32, "contiguous", seed=r, device=device)
    a = projection(r, d, seed=r, device=device)
    h = torch.zeros(r, r, dtype=torch.float64, device=device)
    lorm_ext.lowrank_gram_update(h, x, a)
    g = torch.zeros(d, d, dtype=torch.float64, device=device)
    lorm_ext.gram_update(g, x)
    a64 = a.double()
    # ours: Z^T Z; theirs: A (X^T X) A^T with G's n-term sums and two d-term products;
    # both within projected_gram_bound of A X^T X A^T (the same |X| and |A| terms)
    assert_within(h, a64 @ g @ a64.T, 2 * projected_gram_bound(rows64(x), a, working_dtype(device)))


@pytest.mark.parametrize("r", [3, 8, 13])
def test_cpu_result_does_not_depend_on_thread_count(r):
    """float32 rows take the fused CPU pass, cut into a fixed number of pieces summed in
    order: one thread and two give the same bits."""
    x = make_rows((5, 197), 100, torch.float32, "contiguous", seed=r, device="cpu")
    a = projection(r, 100, seed=r)
    results = []
    for n in (1, 2):  # conftest restores the thread count afterwards
        torch.set_num_threads(n)
        acc, diag = torch.zeros(r, r, dtype=torch.float64), torch.zeros(100, dtype=torch.float64)
        lorm_ext.lowrank_gram_update(acc, x, a, diag)
        results.append((acc, diag))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    rows = x.reshape(-1, 100).double()
    z = rows @ a.double().T
    assert_within(results[0][0], z.T @ z, 2 * projected_gram_bound(rows, a, torch.float64))
