"""Shared strategies and error metrics for the op tests."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

INPUT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
ACC_DTYPES = [torch.float32, torch.float64]
LAYOUTS = ["contiguous", "transposed", "strided", "expanded_rows"]


def make_rows(lead: tuple[int, ...], d: int, dtype: torch.dtype, layout: str, seed: int,
              device: str = "cpu") -> torch.Tensor:
    """A tensor (*lead, d) with the requested memory layout and the same values in every
    layout: 'transposed' stores d first, 'strided' skips every other column of a wider
    buffer, 'expanded_rows' makes the first leading dim a stride-0 broadcast."""
    gen = torch.Generator().manual_seed(seed)
    shape = (*lead, d)
    if layout == "transposed" and len(shape) >= 2:
        base = torch.randn(tuple(reversed(shape)), generator=gen).to(dtype)
        x = base.permute(*reversed(range(len(shape))))
    elif layout == "strided":
        base = torch.randn((*lead, 2 * d), generator=gen).to(dtype)
        x = base[..., ::2]
    elif layout == "expanded_rows" and len(lead) >= 1:
        one = torch.randn((1, *lead[1:], d), generator=gen).to(dtype)
        x = one.expand(shape)
    else:
        x = torch.randn(shape, generator=gen).to(dtype)
    return x.to(device)


@st.composite
def row_tensors(draw, max_d: int = 40, max_lead_dims: int = 3):
    lead = tuple(draw(st.lists(st.integers(0, 6), min_size=0, max_size=max_lead_dims)))
    d = draw(st.integers(1, max_d))
    return dict(lead=lead, d=d, dtype=draw(st.sampled_from(INPUT_DTYPES)),
                layout=draw(st.sampled_from(LAYOUTS)), seed=draw(st.integers(0, 2**31 - 1)))


def rows64(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).double().cpu()


def assert_no_worse_than_torch(ours: torch.Tensor, exact: torch.Tensor, plain: torch.Tensor,
                               acc_dtype: torch.dtype, factor: float = 2.0) -> None:
    """ours may be at most `factor` times as far from the float64 result `exact` as
    `plain` (plain torch at the accumulator's precision), plus a few ulps of the result
    (rounding the exact answer to acc_dtype already costs half an ulp)."""
    assert ours.shape == exact.shape
    if exact.numel() == 0:
        return
    floor = 8 * torch.finfo(acc_dtype).eps * exact.abs().max().item()
    err_ours = (ours.double().cpu() - exact).abs().max().item()
    err_plain = (plain.double().cpu() - exact).abs().max().item()
    assert err_ours <= factor * err_plain + floor, (err_ours, err_plain, floor)
