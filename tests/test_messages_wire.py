"""The wire's narrowing and type holes: values that overflow the wire dtype, dtypes that
are not floating point, and updates whose ``layers`` is not a mapping."""

from __future__ import annotations

import pytest
import torch

from lorm import Aggregator, ClientUpdate, SolveStats, UpdateRejected
from lorm.messages import WIRE_DTYPES


def gram(d: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(3 * d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return x.T @ x


def update(p_fill: float = 1.0, q_scale: float = 1.0, bias_fill: float = 0.0) -> ClientUpdate:
    return ClientUpdate(0, 1, "A", 4, layers={"l": SolveStats(
        p=torch.full((2, 5), p_fill, dtype=torch.float64), q=gram(5) * q_scale)},
        head=SolveStats(p=torch.ones(3, 5, dtype=torch.float64), q=gram(5, 1)),
        head_bias=torch.full((3,), bias_fill, dtype=torch.float64))


@pytest.mark.parametrize("kwargs, wire, gram_dtype, key", [
    (dict(p_fill=1e39), torch.float32, None, "layer/l/p"),
    (dict(bias_fill=1e39), torch.float32, None, "head/bias"),
    (dict(p_fill=1e5), torch.float16, None, "layer/l/p"),
    (dict(q_scale=1e5), torch.float32, torch.float16, "layer/l/q"),
    (dict(p_fill=1e39), torch.bfloat16, None, "layer/l/p"),
])
def test_finite_values_that_overflow_the_wire_dtype_are_refused(kwargs, wire, gram_dtype, key):
    with pytest.raises(ValueError, match=f"{key}: the value .* overflows the wire dtype"):
        update(**kwargs).to_bytes(wire, gram_dtype)


def test_the_largest_finite_value_travels_and_the_next_rounding_step_does_not():
    # float16's largest finite is 65504; the next representable step would be 65536, so
    # round-to-nearest sends values below 65520 to 65504 and from 65520 up to Inf.
    limit = torch.finfo(torch.float16).max
    for fill, fits in ((limit, True), (65519.0, True), (65520.0, False), (1e5, False)):
        if fits:
            back = ClientUpdate.from_bytes(update(p_fill=fill).to_bytes(torch.float16))
            assert torch.equal(back.layers["l"].p, torch.full((2, 5), limit, dtype=torch.float64))
        else:
            with pytest.raises(ValueError, match="overflows the wire dtype float16"):
                update(p_fill=fill).to_bytes(torch.float16)


def test_widening_or_keeping_the_dtype_never_refuses():
    big = update(p_fill=1e300)
    assert ClientUpdate.from_bytes(big.to_bytes(torch.float64)).layers["l"].p[0, 0] == 1e300
    f32 = ClientUpdate(0, 1, "A", 1, layers={"l": SolveStats(
        p=torch.full((1, 2), torch.finfo(torch.float32).max), q=torch.ones(2))})
    assert torch.isfinite(ClientUpdate.from_bytes(f32.to_bytes(torch.float32)).layers["l"].p).all()


def test_non_finite_values_travel_and_the_server_refuses_them():
    poisoned = update(p_fill=float("nan")).to_bytes(torch.float16)
    agg = Aggregator(0, 1, "A")
    with pytest.raises(UpdateRejected, match="NaN or Inf"):
        agg.add(ClientUpdate.from_bytes(poisoned, dtype=None))
    assert agg.num_clients == 0


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool,
                                   torch.complex64, torch.float8_e4m3fn])
def test_non_float_wire_dtypes_are_refused(dtype):
    with pytest.raises(ValueError, match="wire dtype must be one of float64, float32, "
                                         "bfloat16, float16"):
        update().to_bytes(dtype)
    with pytest.raises(ValueError, match="wire dtype must be one of"):
        update().to_bytes(torch.float32, gram_dtype=dtype)


@pytest.mark.parametrize("dtype", WIRE_DTYPES)
def test_every_wire_dtype_round_trips(dtype):
    back = ClientUpdate.from_bytes(update().to_bytes(dtype), dtype=None)
    assert back.layers["l"].p.dtype == dtype and back.head_bias.dtype == dtype


@pytest.mark.parametrize("layers", [[("l", None)], None, "l", (SolveStats(None, torch.ones(2)),)])
def test_layers_that_are_not_a_mapping_are_rejected_not_attribute_errors(layers):
    agg = Aggregator(0, 1, "A")
    agg.add(update())
    before = {k: v.clone() for k, v in agg.partial_sums()[0].items()}
    bad = update()
    bad.layers = layers
    with pytest.raises(UpdateRejected, match=f"layers must map layer names to SolveStats, got "
                                             f"{type(layers).__name__}"):
        agg.add(bad)
    after = agg.partial_sums()[0]
    assert agg.num_clients == 1 and all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(TypeError, match="ClientUpdate.layers must map"):
        bad.to_bytes()
