"""inspect_term (the server's one-read check of a client's term) against the reference."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lorm_ext
from conftest import devices
from helpers import INPUT_DTYPES


@st.composite
def terms(draw):
    symmetric = draw(st.booleans())
    d = draw(st.integers(0, 80))
    shape = (d, d) if symmetric else tuple(draw(st.lists(st.integers(0, 40), max_size=3)))
    dtype = draw(st.sampled_from(INPUT_DTYPES))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    t = torch.randn(shape, generator=gen) * draw(st.sampled_from([1e-3, 1.0, 1e30]))
    if symmetric:
        t = (t + t.mT) / 2
    t = t.to(dtype)
    if t.numel() and draw(st.booleans()):  # plant a fault somewhere
        index = draw(st.integers(0, t.numel() - 1))
        fault = draw(st.sampled_from(["nan", "inf", "-inf", "asymmetry"]))
        flat = t.reshape(-1)
        flat[index] = {"nan": float("nan"), "inf": float("inf"), "-inf": -float("inf"),
                       "asymmetry": flat[index].float() * 2 + 1}[fault]
    return t, symmetric


@pytest.mark.parametrize("device", devices())
@given(terms())
def test_matches_reference(device, case):
    t, symmetric = case
    ours = lorm_ext.inspect_term(t.to(device), symmetric)
    ref = lorm_ext.reference.inspect_term(t, symmetric).tolist()
    assert ours[1] == bool(ref[1]) and ours[2] == bool(ref[2])
    assert ours[0] == ref[0]  # a maximum is exact: no rounding anywhere


def test_by_hand():
    q = torch.tensor([[2.0, -5.0], [-5.0, 1.0]], dtype=torch.float64)
    assert lorm_ext.inspect_term(q, symmetric=True) == (5.0, True, True)
    q[0, 1] = -5.000001
    assert lorm_ext.inspect_term(q, symmetric=True) == (5.000001, True, False)
    assert lorm_ext.inspect_term(torch.tensor([1.0, float("nan"), -3.0])) == (3.0, False, True)
    assert lorm_ext.inspect_term(torch.tensor([1.0, -float("inf")]))[:2] == (float("inf"), False)
    assert lorm_ext.inspect_term(torch.empty(0)) == (0.0, True, True)


def test_bad_arguments():
    with pytest.raises(lorm_ext.LormInputError, match="square"):
        lorm_ext.inspect_term(torch.zeros(2, 3), symmetric=True)
    with pytest.raises(lorm_ext.LormInputError, match="t must be one of"):
        lorm_ext.inspect_term(torch.zeros(3, dtype=torch.int32))
