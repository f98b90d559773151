"""Argument validation of the public ops. Everything here runs before any tensor is
written, so a rejected call leaves every accumulator exactly as it was."""

from __future__ import annotations

import torch

from .errors import LormInputError

INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
ACC_DTYPES = (torch.float32, torch.float64)


def _fail(op: str, message: str):
    raise LormInputError(f"{op}: {message}")


def _tensor(op: str, name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        _fail(op, f"{name} must be a torch.Tensor, got {type(t).__name__}")


def _dtype(op: str, name: str, t: torch.Tensor, allowed) -> None:
    if t.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        _fail(op, f"{name} must be one of {names}, got {str(t.dtype).replace('torch.', '')}")


def _same_device(op: str, named: dict[str, torch.Tensor]) -> None:
    meta = [name for name, t in named.items() if t.device.type == "meta"]
    if meta:
        _fail(op, f"{', '.join(meta)} on the meta device: eager calls need real tensors "
                  "(meta/fake tensors are for torch.compile tracing)")
    devices = {name: t.device for name, t in named.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{n} on {d}" for n, d in devices.items())
        _fail(op, f"tensors are on different devices: {listed}")


def _accumulator(op: str, name: str, acc: torch.Tensor, shapes: list[tuple[int, ...]]) -> None:
    _dtype(op, name, acc, ACC_DTYPES)
    if tuple(acc.shape) not in shapes:
        expected = " or ".join(str(s) for s in shapes)
        _fail(op, f"{name} must have shape {expected}, got {tuple(acc.shape)}")
    if not acc.is_contiguous():
        _fail(op, f"{name} must be contiguous")
    if acc.requires_grad:
        _fail(op, f"{name} requires grad; accumulators are plain statistics buffers")


def _byte_range(t: torch.Tensor) -> tuple[int, int]:
    """First and one-past-last byte of ``t`` inside its storage."""
    start = t.storage_offset() * t.element_size()
    extent = sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))
    return start, start + (extent + 1) * t.element_size()


def _no_overlap(op: str, acc_name: str, acc: torch.Tensor, inputs: dict[str, torch.Tensor]) -> None:
    """An accumulator written in place must not share memory with what the op reads."""
    if torch.compiler.is_compiling() or acc.numel() == 0:
        return
    acc_start, acc_end = _byte_range(acc)
    for name, t in inputs.items():
        if t.numel() == 0 or t.untyped_storage().data_ptr() != acc.untyped_storage().data_ptr():
            continue
        start, end = _byte_range(t)
        if start < acc_end and acc_start < end:
            _fail(op, f"{acc_name} overlaps {name} in memory; the accumulator must be a "
                      "separate buffer")


def _rows(op: str, x: torch.Tensor) -> int:
    _tensor(op, "x", x)
    if x.dim() < 1:
        _fail(op, "x must be (..., d), got a 0-d tensor")
    _dtype(op, "x", x, INPUT_DTYPES)
    return x.shape[-1]


def check_gram_update(acc, x) -> None:
    op = "gram_update"
    _tensor(op, "acc", acc)
    d = _rows(op, x)
    _accumulator(op, "acc", acc, [(d, d), (d,)])
    _same_device(op, {"acc": acc, "x": x})
    _no_overlap(op, "acc", acc, {"x": x})


def check_lowrank_gram_update(acc, x, a, diag_acc) -> None:
    op = "lowrank_gram_update"
    _tensor(op, "acc", acc)
    _tensor(op, "a", a)
    d = _rows(op, x)
    if a.dim() != 2 or a.shape[1] != d:
        _fail(op, f"a must be (r, d) with d = x.shape[-1] = {d}, got {tuple(a.shape)}")
    _dtype(op, "a", a, INPUT_DTYPES)
    r = a.shape[0]
    if r > d:
        _fail(op, f"rank r = {r} exceeds d = {d}: a must be (r, d) with r <= d")
    _accumulator(op, "acc", acc, [(r, r)])
    named = {"acc": acc, "x": x, "a": a}
    if diag_acc is not None:
        _tensor(op, "diag_acc", diag_acc)
        _accumulator(op, "diag_acc", diag_acc, [(d,)])
        named["diag_acc"] = diag_acc
    _same_device(op, named)
    inputs = {"x": x, "a": a}
    _no_overlap(op, "acc", acc, {**inputs, **({} if diag_acc is None else {"diag_acc": diag_acc})})
    if diag_acc is not None:
        _no_overlap(op, "diag_acc", diag_acc, inputs)
    if not torch.isfinite(a).all():
        _fail(op, "a contains NaN or Inf")


def check_spd_solve(q, p) -> None:
    op = "spd_solve"
    _tensor(op, "q", q)
    _tensor(op, "p", p)
    _dtype(op, "q", q, INPUT_DTYPES)
    _dtype(op, "p", p, INPUT_DTYPES)
    _same_device(op, {"q": q, "p": p})
    if p.dim() < 2:
        _fail(op, f"p must be (..., m, d), got {tuple(p.shape)}")
    batch, d = tuple(p.shape[:-2]), p.shape[-1]
    if tuple(q.shape) not in (batch + (d, d), batch + (d,)):
        _fail(op, f"q must be {batch + (d, d)} or diagonal {batch + (d,)} to match "
                  f"p {tuple(p.shape)}, got {tuple(q.shape)}")
    for name, t in (("q", q), ("p", p)):
        if not torch.isfinite(t).all():
            _fail(op, f"{name} contains NaN or Inf")


def check_add_terms(sums, ts, kinds, limits, probes) -> None:
    """Lists of equal lengths, valid kinds, terms as for inspect_terms, sums shaped like
    their terms (contiguous float32/float64, same device), one (P, d) probe matrix per
    square Gram."""
    op = "add_terms"
    for name, seq in (("sums", sums), ("ts", ts), ("kinds", kinds), ("limits", limits), ("probes", probes)):
        if not isinstance(seq, (list, tuple)):
            _fail(op, f"{name} must be a list, got {type(seq).__name__}")
    if not len(sums) == len(ts) == len(kinds) == len(limits):
        _fail(op, f"{len(ts)} terms but {len(sums)} sums, {len(kinds)} kinds and {len(limits)} limits")
    for k, kind in enumerate(kinds):
        if kind not in (0, 1, 2) or isinstance(kind, bool):
            _fail(op, f"kinds[{k}] must be 0 (plain), 1 (diagonal Gram) or 2 (square Gram), got {kind!r}")
    check_inspect_terms(ts, [k == 2 for k in kinds])
    squares = [t for t, k in zip(ts, kinds) if k == 2]
    if len(probes) != len(squares):
        _fail(op, f"{len(probes)} probe matrices for {len(squares)} square Grams (kinds == 2)")
    for k, (s, t) in enumerate(zip(sums, ts)):
        _tensor(op, f"sums[{k}]", s)
        _dtype(op, f"sums[{k}]", s, ACC_DTYPES)
        if s.shape != t.shape:
            _fail(op, f"sums[{k}] is {tuple(s.shape)} but ts[{k}] is {tuple(t.shape)}")
        if not s.is_contiguous() or s.requires_grad:
            _fail(op, f"sums[{k}] must be contiguous and not require grad")
        if s.device != t.device:
            _fail(op, f"sums[{k}] is on {s.device} but ts[{k}] is on {t.device}")
    for j, (v, q) in enumerate(zip(probes, squares)):
        _tensor(op, f"probes[{j}]", v)
        if v.dim() != 2 or v.shape[1] != q.shape[0] or not v.is_floating_point() or v.device != q.device:
            _fail(op, f"probes[{j}] must be a floating (P, {q.shape[0]}) tensor on {q.device}, "
                      f"got {tuple(v.shape)} {v.dtype} on {v.device}")


def check_inspect_terms(ts, symmetric) -> None:
    op = "inspect_terms"
    if not isinstance(ts, (list, tuple)):
        _fail(op, f"ts must be a list of tensors, got {type(ts).__name__}")
    if len(symmetric) != len(ts):
        _fail(op, f"{len(ts)} tensors but {len(symmetric)} symmetric flags")
    for k, (t, sym) in enumerate(zip(ts, symmetric)):
        _tensor(op, f"ts[{k}]", t)
        _dtype(op, f"ts[{k}]", t, INPUT_DTYPES)
        if sym and (t.dim() != 2 or t.shape[0] != t.shape[1]):
            _fail(op, f"symmetric[{k}] needs a square (d, d) tensor, got {tuple(t.shape)}")
    if ts:
        _same_device(op, {f"ts[{k}]": t for k, t in enumerate(ts)})
