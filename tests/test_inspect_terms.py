"""inspect_terms (the server's one-read check of a client's terms) against the reference."""

import math

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


def same_number(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("device", devices())
@given(st.lists(terms(), min_size=1, max_size=4))
def test_matches_reference(device, cases):
    ts, flags = [t for t, _ in cases], [s for _, s in cases]
    ours = lorm_ext.inspect_terms([t.to(device) for t in ts], flags)
    ref = lorm_ext.reference.inspect_terms(ts, [int(f) for f in flags]).tolist()
    for mine, theirs in zip(ours, ref):
        assert mine[1] == bool(theirs[1]) and mine[2] == bool(theirs[2])
        # a maximum and a minimum are exact: no rounding anywhere
        assert same_number(mine[0], theirs[0]) and same_number(mine[3], theirs[3])


def test_by_hand():
    q = torch.tensor([[2.0, -5.0], [-5.0, 1.0]], dtype=torch.float64)
    diagonal = torch.tensor([3.0, -0.5, float("nan")])
    (a, b, c) = lorm_ext.inspect_terms([q, diagonal, torch.empty(0)], [True, False, False])
    assert a == (5.0, True, True, 1.0)          # the diagonal's minimum, not -5
    assert b == (3.0, False, True, -0.5)         # NaN skipped for max and min, not finite
    assert c == (0.0, True, True, float("inf"))  # nothing to take a minimum of
    q[0, 1] = -5.000001
    assert lorm_ext.inspect_terms([q], [True])[0][:3] == (5.000001, True, False)
    assert lorm_ext.inspect_terms([torch.tensor([1.0, -float("inf")])])[0][:2] == \
        (float("inf"), False)
    assert lorm_ext.inspect_terms([]) == []


def test_bad_arguments():
    with pytest.raises(lorm_ext.LormInputError, match="square"):
        lorm_ext.inspect_terms([torch.zeros(2, 3)], [True])
    with pytest.raises(lorm_ext.LormInputError, match=r"ts\[0\] must be one of"):
        lorm_ext.inspect_terms([torch.zeros(3, dtype=torch.int32)])
    with pytest.raises(lorm_ext.LormInputError, match="flags"):
        lorm_ext.inspect_terms([torch.zeros(3)], [False, True])
