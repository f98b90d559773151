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


def symmetric_matrix(d: int, seed: int = 0) -> torch.Tensor:
    t = torch.randn(d, d, generator=torch.Generator().manual_seed(seed))
    return (t + t.T) / 2


@pytest.mark.parametrize("d", [7, 8, 9, 16, 17, 33])
def test_every_asymmetric_pair_is_found(d):
    """float32 runs 8 x 8 blocks transposed in registers plus scalar edges: a single
    unequal pair anywhere, and a NaN anywhere off the diagonal, must show."""
    base = symmetric_matrix(d)
    assert lorm_ext.inspect_terms([base], [True])[0][2]
    for i in range(d):
        for j in range(d):
            if i == j:
                continue
            for fault in (base[i, j].item() * 2 + 1, float("nan")):
                t = base.clone()
                t[i, j] = fault
                assert not lorm_ext.inspect_terms([t], [True])[0][2], (i, j, fault)
    t = base.clone()
    t.diagonal().fill_(float("nan"))  # the diagonal is not compared
    assert lorm_ext.inspect_terms([t], [True])[0][1:3] == (False, True)


def test_large_matrix_pieces_cover_every_row():
    """A d that splits into several pieces, each taking rows from both ends of the
    triangle: an asymmetry in any band of rows must reach the verdict."""
    d = 1000
    base = symmetric_matrix(d)
    gen = torch.Generator().manual_seed(1)
    rows = list(range(0, d, 37)) + [d - 9, d - 2, d // 2, d // 2 + 1]
    for i in rows:
        j = int(torch.randint(0, d, (1,), generator=gen))
        if i == j:
            continue
        t = base.clone()
        t[i, j] += 1.0
        assert lorm_ext.inspect_terms([t, base], [True, True])[0][2] is False, (i, j)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 15, 16, 17, 40])
def test_flat_scan_sees_every_position(n):
    """The float32 scan reads 16 values per step plus a scalar tail: a NaN, an Inf, the
    largest and the smallest value are seen wherever they sit."""
    base = torch.linspace(-1.0, 1.0, n) * 0.5
    for k in range(n):
        for value in (float("nan"), -float("inf"), 3.0, -4.0):
            t = base.clone()
            t[k] = value
            ref = lorm_ext.reference.inspect_terms([t], [0])[0].tolist()
            max_abs, finite, _, smallest = lorm_ext.inspect_terms([t])[0]
            assert (max_abs, finite, smallest) == (ref[0], bool(ref[1]), ref[3]), (k, value)
            assert finite == math.isfinite(value)
            assert max_abs == (abs(value) if not math.isnan(value) else (0.5 if n > 1 else 0.0))
