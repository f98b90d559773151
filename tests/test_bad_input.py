"""Every bad input raises LormInputError naming the problem and leaves acc untouched."""

import pytest
import torch

import lorm_ext
from lorm_ext import LormInputError


def state(*tensors):
    return [t.clone() for t in tensors]


def assert_unchanged(before, *tensors):
    for old, new in zip(before, tensors):
        assert torch.equal(old, new)


def filled(shape, dtype=torch.float64):
    return torch.arange(float(torch.Size(shape).numel()), dtype=dtype).reshape(shape)


GRAM_CASES = [
    ("acc must have shape", lambda: (filled((5, 5)), torch.randn(3, 4))),
    ("acc must have shape", lambda: (filled((4, 3)), torch.randn(3, 4))),
    ("x must be one of", lambda: (filled((4,)), torch.ones(3, 4, dtype=torch.int64))),
    ("acc must be one of", lambda: (filled((4,), torch.float16), torch.randn(3, 4))),
    ("0-d", lambda: (filled((1,)), torch.tensor(1.0))),
    ("meta device", lambda: (filled((4,)), torch.randn(3, 4, device="meta"))),
    ("NaN or Inf", lambda: (filled((4, 4)), torch.tensor([[1.0, float("nan"), 0.0, 2.0]]))),
    ("NaN or Inf", lambda: (filled((4,)), torch.tensor([[1.0, float("inf"), 0.0, 2.0]]))),
    ("NaN or Inf", lambda: (filled((4,), torch.float32), torch.full((2, 4), 1e30))),
    ("must be a torch.Tensor", lambda: (filled((4,)), [[1.0, 2.0, 3.0, 4.0]])),
]


@pytest.mark.parametrize("message,make", GRAM_CASES)
def test_gram_update_rejects(message, make):
    acc, x = make()
    before = state(acc)
    with pytest.raises(LormInputError, match=message) as info:
        lorm_ext.gram_update(acc, x)
    assert "gram_update" in str(info.value)
    assert_unchanged(before, acc)


def lowrank_args(r=2, d=4, n=3):
    return filled((r, r)), torch.randn(n, d), torch.randn(r, d), filled((d,))


LOWRANK_CASES = [
    ("rank r = 5 exceeds d = 4", lambda: (filled((5, 5)), torch.randn(3, 4), torch.randn(5, 4), None)),
    ("a must be \\(r, d\\)", lambda: (filled((2, 2)), torch.randn(3, 4), torch.randn(2, 3), None)),
    ("acc must have shape \\(2, 2\\)", lambda: (filled((3, 3)),) + lowrank_args()[1:]),
    ("diag_acc must have shape", lambda: lowrank_args()[:3] + (filled((5,)),)),
    ("diag_acc must be one of", lambda: lowrank_args()[:3] + (filled((4,), torch.bfloat16),)),
    ("a contains NaN", lambda: (filled((2, 2)), torch.randn(3, 4),
                                torch.tensor([[1.0, 0, 0, 0], [0, float("nan"), 0, 0]]), None)),
    ("x contains NaN", lambda: (filled((2, 2)), torch.tensor([[float("nan"), 1, 2, 3]]),
                                torch.randn(2, 4), filled((4,)))),
    ("meta device", lambda: lowrank_args()[:2] + (torch.randn(2, 4, device="meta"), None)),
]


@pytest.mark.parametrize("message,make", LOWRANK_CASES)
def test_lowrank_gram_update_rejects(message, make):
    acc, x, a, diag = make()
    before = state(acc, *([] if diag is None else [diag]))
    with pytest.raises(LormInputError, match=message):
        lorm_ext.lowrank_gram_update(acc, x, a, diag)
    assert_unchanged(before, acc, *([] if diag is None else [diag]))


def test_empty_x_is_a_no_op():
    acc, diag = filled((3, 3)), filled((5,))
    before = state(acc, diag)
    lorm_ext.gram_update(diag, torch.empty(0, 5))
    lorm_ext.gram_update(diag, torch.empty(2, 0, 5))
    lorm_ext.lowrank_gram_update(acc, torch.empty(0, 5), torch.randn(3, 5), diag)
    assert_unchanged(before, acc, diag)


def test_check_finite_false_skips_the_guard():
    acc = torch.zeros(2)
    lorm_ext.gram_update(acc, torch.tensor([[float("nan"), 1.0]]), check_finite=False)
    assert torch.isnan(acc[0]) and acc[1] == 1.0


SOLVE_CASES = [
    ("q must be", lambda: (torch.eye(3), torch.randn(2, 4))),
    ("p must be \\(..., m, d\\)", lambda: (torch.eye(3), torch.randn(3))),
    ("q must be", lambda: (torch.eye(3).expand(2, 3, 3), torch.randn(3, 2, 3))),
    ("q contains NaN", lambda: (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), torch.randn(1, 2))),
    ("p contains NaN", lambda: (torch.eye(2), torch.tensor([[float("inf"), 1.0]]))),
    ("q must be one of", lambda: (torch.eye(2, dtype=torch.int32), torch.randn(1, 2))),
    ("meta device", lambda: (torch.eye(2), torch.randn(1, 2, device="meta"))),
]


@pytest.mark.parametrize("message,make", SOLVE_CASES)
def test_spd_solve_rejects(message, make):
    q, p = make()
    with pytest.raises(LormInputError, match=message):
        lorm_ext.spd_solve(q, p)


def test_compiled_op_guards_direct_calls():
    """torch.ops.lorm_ext.* validate too: bypassing the wrapper cannot read out of bounds."""
    if lorm_ext.backend() == "reference":
        pytest.skip("extension not built")
    acc = filled((5, 5))
    before = state(acc)
    with pytest.raises(RuntimeError, match="acc must be \\(d, d\\) or \\(d,\\)"):
        torch.ops.lorm_ext.gram_update(acc, torch.randn(3, 4))
    with pytest.raises(RuntimeError, match="exceeds d"):
        torch.ops.lorm_ext.lowrank_gram_update(acc, torch.randn(3, 4), torch.randn(5, 4), None)
    assert_unchanged(before, acc)
