"""add_terms (the server's checked add) against the reference: the same findings and
verdicts, every term added when all pass, and not one bit of any sum changed otherwise."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lorm_ext
from conftest import devices
from lorm_ext import reference as R
from test_inspect_terms import same_number, terms

KINDS = {True: R.SQUARE_GRAM}


@st.composite
def updates(draw):
    """Terms (some with planted faults), their kinds, sums and limits."""
    items = draw(st.lists(terms(), min_size=1, max_size=4))
    ts, kinds = [], []
    for t, symmetric in items:
        if symmetric:
            kind = R.SQUARE_GRAM
            if t.numel() and draw(st.booleans()):  # a Gram with a negative diagonal entry
                t = t.clone()
                t.diagonal()[0] = -abs(t.diagonal()[0].float()) - 1
        else:
            kind = draw(st.sampled_from([R.PLAIN, R.DIAGONAL_GRAM]))
        ts.append(t)
        kinds.append(kind)
    limits = [draw(st.sampled_from([1e300, 1e29, 0.5])) for _ in ts]
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    sums = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in ts]
    probes = [torch.randn(8, t.shape[0], generator=gen) for t, k in zip(ts, kinds) if k == R.SQUARE_GRAM]
    return sums, ts, kinds, limits, probes


@pytest.mark.parametrize("device", devices())
@given(updates())
def test_matches_reference_and_is_all_or_nothing(device, update):
    sums, ts, kinds, limits, probes = update
    ours = [s.clone().to(device) for s in sums]
    theirs = [s.clone() for s in sums]
    rows = lorm_ext.add_terms(ours, [t.to(device) for t in ts], kinds, limits, R.NEGATIVE_RTOL,
                              [v.to(device) for v in probes])
    expected = R.add_terms(theirs, ts, kinds, limits, R.NEGATIVE_RTOL, probes)
    assert rows.shape == (len(ts), 5) and rows.device.type == "cpu"
    for got, want in zip(rows.tolist(), expected.tolist()):
        assert all(same_number(a, b) for a, b in zip(got, want)), (got, want)
    accepted = bool((rows[:, 4] == R.ACCEPTED).all())
    for s_ours, s_ref, s_before, t in zip(ours, theirs, sums, ts):
        if accepted:
            # one float64 addition per entry (the term widens exactly): a single correctly
            # rounded operation, the same bits on every CPU and GPU, as the reference's
            assert torch.equal(s_ours.cpu(), s_before + t.double().cpu())
            assert torch.equal(s_ours.cpu(), s_ref)
        else:
            assert torch.equal(s_ours.cpu(), s_before)  # bit for bit untouched


def test_verdicts_name_the_first_failing_check():
    q = torch.eye(3)

    def verdict(t, kind=R.SQUARE_GRAM, limit=1e300, probes=None):
        sums = [torch.zeros(t.shape, dtype=torch.float64)]
        probes = probes if probes is not None else ([torch.randn(8, 3)] if kind == R.SQUARE_GRAM else [])
        return int(lorm_ext.add_terms(sums, [t], [kind], [limit], R.NEGATIVE_RTOL, probes)[0, 4])

    assert verdict(q) == R.ACCEPTED
    assert verdict(torch.tensor([[1.0, float("nan"), 0], [0, 1, 0], [0, 0, 1]])) == R.NOT_FINITE
    assert verdict(q + torch.triu(torch.ones(3, 3), 1)) == R.NOT_SYMMETRIC
    assert verdict(-q) == R.NEGATIVE_DIAGONAL
    assert verdict(-torch.ones(3), kind=R.DIAGONAL_GRAM) == R.NEGATIVE_DIAGONAL
    assert verdict(-torch.ones(3), kind=R.PLAIN) == R.ACCEPTED  # a p may be negative
    assert verdict(q * 10, limit=5.0) == R.WOULD_OVERFLOW
    # symmetric, non-negative diagonal, indefinite: v = (1, -1, 0) sees 1 + 1 - 2 * 3 < 0
    indefinite = torch.tensor([[1.0, 3, 0], [3, 1, 0], [0, 0, 1]])
    assert verdict(indefinite, probes=[torch.tensor([[1.0, -1.0, 0.0]])]) == R.NEGATIVE_CURVATURE


@pytest.mark.parametrize("bad, match", [
    (dict(kinds=[3]), "kinds\\[0\\] must be 0"),
    (dict(probes=[]), "0 probe matrices for 1 square Grams"),
    (dict(probes=[torch.randn(3, 8)]), "must be a floating \\(P, 3\\)"),
    (dict(sums=[torch.zeros(3, 4, dtype=torch.float64)]), "sums\\[0\\] is \\(3, 4\\)"),
    (dict(sums=[torch.zeros(3, 3, dtype=torch.int64)]), "sums\\[0\\] must be one of"),
    (dict(limits=[]), "1 terms but 1 sums, 1 kinds and 0 limits"),
])
def test_bad_arguments_are_refused_before_any_add(bad, match):
    args = dict(sums=[torch.zeros(3, 3, dtype=torch.float64)], ts=[torch.eye(3)], kinds=[2],
                limits=[1e300], probes=[torch.randn(8, 3)])
    args.update(bad)
    with pytest.raises(lorm_ext.LormInputError, match=match):
        lorm_ext.add_terms(args["sums"], args["ts"], args["kinds"], args["limits"], R.NEGATIVE_RTOL,
                           args["probes"])


def test_unchecked_call_still_refuses_bad_shapes_in_the_kernel():
    s = torch.zeros(3, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="add_terms: sums\\[0\\] is \\(3, 4\\) but ts\\[0\\] is \\(3, 3\\)"):
        lorm_ext.add_terms([s], [torch.eye(3)], [2], [1e300], R.NEGATIVE_RTOL, [torch.randn(8, 3)],
                           check=False)
    assert s.abs().sum() == 0
