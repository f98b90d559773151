"""gram_update against the float64 reference: full and diagonal, every dtype and layout."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lorm_ext
from bounds import assert_within, diag_gram_bound, gram_bound
from conftest import devices
from helpers import ACC_DTYPES, assert_no_worse_than_torch, make_rows, row_tensors, rows64


def plain_torch(x: torch.Tensor, acc_dtype: torch.dtype, diagonal: bool) -> torch.Tensor:
    """The naive way at the accumulator's precision: x.T @ x (then its diagonal)."""
    rows = x.reshape(-1, x.shape[-1]).to(acc_dtype)
    gram = rows.T @ rows
    return torch.diagonal(gram).clone() if diagonal else gram


@pytest.mark.parametrize("device", devices())
@given(spec=row_tensors(), acc_dtype=st.sampled_from(ACC_DTYPES), diagonal=st.booleans())
def test_matches_reference(device, spec, acc_dtype, diagonal):
    x = make_rows(**spec, device=device)
    d = spec["d"]
    acc = torch.zeros((d,) if diagonal else (d, d), dtype=acc_dtype, device=device)
    lorm_ext.gram_update(acc, x)
    rows = rows64(x)
    exact = (rows * rows).sum(0) if diagonal else rows.T @ rows
    assert_no_worse_than_torch(acc, exact, plain_torch(x.cpu(), acc_dtype, diagonal), acc_dtype)


@pytest.mark.parametrize("device", devices())
@given(spec=row_tensors(max_lead_dims=1), chunks=st.integers(1, 5), diagonal=st.booleans())
def test_streaming_in_chunks_equals_one_update(device, spec, chunks, diagonal):
    x = make_rows(**spec, device=device).reshape(-1, spec["d"])
    shape = (spec["d"],) if diagonal else (spec["d"], spec["d"])
    whole = torch.zeros(shape, dtype=torch.float64, device=device)
    lorm_ext.gram_update(whole, x)
    streamed = torch.zeros_like(whole)
    for part in torch.tensor_split(x, chunks):
        lorm_ext.gram_update(streamed, part)
    # two summation orders of the same n products in float64 (the rows convert exactly):
    # each within gamma(n) |X|^T |X| of the exact sum (bounds.py), so twice that apart.
    rows = rows64(x)
    bound = diag_gram_bound(rows, torch.float64) if diagonal else gram_bound(rows, torch.float64)
    assert_within(streamed, whole, 2 * bound)


@pytest.mark.parametrize("device", devices())
def test_accumulates_onto_existing_values(device):
    x = make_rows((5, 3), 12, torch.float32, "contiguous", seed=1, device=device)
    acc = torch.full((12, 12), 2.5, dtype=torch.float64, device=device)
    lorm_ext.gram_update(acc, x)
    rows = rows64(x)
    # a sum of the start value and n products, ours and torch's, each within
    # gamma(n + 1) (|start| + |X|^T |X|) of the exact one
    start = torch.full((12, 12), 2.5, dtype=torch.float64)
    bound = gram_bound(rows, torch.float64, start=start)
    assert_within(acc, start + rows.T @ rows, 2 * bound)


@pytest.mark.parametrize("d", [1, 7, 768])
def test_vit_token_batches(d):
    """ViT-shaped input (images, tokens, d) in bfloat16, as it arrives under autocast."""
    x = make_rows((2, 197), d, torch.bfloat16, "contiguous", seed=d)
    diag = torch.zeros(d, dtype=torch.float32)
    lorm_ext.gram_update(diag, x)
    rows = rows64(x)
    # summed into a float32 accumulator (worst case: every rounding in float32, plus the
    # store), against a float64 sum
    bound = diag_gram_bound(rows, torch.float32, extra=1) + diag_gram_bound(rows, torch.float64)
    assert_within(diag, (rows * rows).sum(0), bound)


def test_reference_backend_agrees_with_compiled():
    x = make_rows((4, 9), 16, torch.float16, "strided", seed=3)
    ours, ref = torch.zeros(16, 16), torch.zeros(16, 16)
    lorm_ext.gram_update(ours, x)
    lorm_ext.reference.gram_update(ref, x)
    # two float32 accumulations of the same products (float16 rows convert exactly)
    assert_within(ours, ref, 2 * gram_bound(rows64(x), torch.float32, extra=1))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("d,dtype,layout", [(512, torch.float32, "contiguous"),
                                            (600, torch.bfloat16, "strided"),
                                            (771, torch.float64, "transposed")])
def test_wide_full_gram_is_symmetric_and_exact(device, d, dtype, layout):
    """Wide d takes the symmetric tile path: only upper strips are multiplied."""
    x = make_rows((3, 41), d, dtype, layout, seed=d, device=device)
    acc = torch.randn(d, d, dtype=torch.float64, device=device)  # need not be symmetric
    start = acc.clone()
    lorm_ext.gram_update(acc, x, check_finite=False)
    rows = rows64(x)
    # acc = start + n products (gamma(n + 1) (|start| + |X|^T |X|)); subtracting start
    # again rounds once more, relative to |acc - start| <= |start| + |X|^T|X| (+ error);
    # the reference X^T X is within gamma(n) |X|^T |X|
    start = start.cpu()
    bound = gram_bound(rows, torch.float64, start=start, extra=1) + gram_bound(rows, torch.float64)
    assert_within(acc - start.to(device), rows.T @ rows, bound)
