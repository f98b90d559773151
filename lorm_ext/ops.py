"""Public ops: validation, the non-finite guard, and dispatch to the compiled kernels
(or to :mod:`lorm_ext.reference` when the extension is not built, or on CUDA for an op
whose kernel failed the self-check: :mod:`lorm_ext.self_check`)."""

from __future__ import annotations

import torch

from . import _checks, reference, self_check
from ._loader import backend, warn_if_reference
from .errors import LormInputError


# The compiled kernels (stable ABI) can raise only RuntimeError; a message starting with
# this tag (csrc/stable.h) is a ValueError about the values passed in.
VALUE_ERROR_TAG = "[lorm_ext ValueError] "


def _compiled_value_errors(fn, *args):
    """fn(*args), re-raising the kernels' tagged RuntimeErrors as ValueError."""
    try:
        return fn(*args)
    except RuntimeError as exc:
        message = str(exc)
        if VALUE_ERROR_TAG not in message:
            raise
        raise ValueError(message.split(VALUE_ERROR_TAG, 1)[1]) from None


def _raise_if_non_finite(op: str, *updates: torch.Tensor) -> None:
    if not all(bool(torch.isfinite(update).all()) for update in updates):
        raise LormInputError(f"{op}: x contains NaN or Inf (or its Gram overflowed the "
                             "accumulator's dtype); the accumulators were left unchanged")


def gram_update(acc: torch.Tensor, x: torch.Tensor, *, check_finite: bool = True) -> None:
    """Adds the Gram of the rows of ``x`` to ``acc`` in place.

    Args:
        acc: ``(d, d)`` for the full Gram ``x.T @ x`` or ``(d,)`` for its diagonal
            ``(x * x).sum(rows)``; float32 or float64, contiguous.
        x: ``(..., d)`` float32/float16/bfloat16/float64, any strides; every leading
            index is a row. An empty ``x`` is a no-op.
        check_finite: compute the diagonal into a scratch ``(d,)`` first and refuse a
            non-finite one, so NaN/Inf in ``x`` raise and leave ``acc`` untouched. For a
            diagonal ``acc`` that is the update itself; for a full ``acc`` it is one extra
            O(n d) read of ``x``. ``False`` adds straight into ``acc``.
    """
    _checks.check_gram_update(acc, x)
    impl = reference.gram_update if warn_if_reference() else self_check.kernel("gram_update", acc)
    if not check_finite:
        impl(acc, x)
        return
    # The diagonal sees every value of x and bounds every entry of the full Gram
    # (|G_jk| <= sqrt(G_jj G_kk)), so it alone decides whether x is usable.
    diagonal = torch.zeros(x.shape[-1], dtype=acc.dtype, device=acc.device)
    impl(diagonal, x)
    _raise_if_non_finite("gram_update", diagonal)
    if acc.dim() == 1:
        acc.add_(diagonal)
    else:
        impl(acc, x)


def lowrank_gram_update(acc: torch.Tensor, x: torch.Tensor, a: torch.Tensor,
                        diag_acc: torch.Tensor | None = None, *,
                        check_finite: bool = True) -> None:
    """Adds the Gram of the projected rows ``z = x @ a.T`` to ``acc`` in one pass.

    Never forms a ``(d, d)`` matrix: this is the B-step statistic of LoRM.

    Args:
        acc: ``(r, r)`` float32/float64, receives ``z.T @ z``.
        x: ``(..., d)`` rows, as in :func:`gram_update`.
        a: ``(r, d)`` projection with ``r <= d``, any float dtype (finite).
        diag_acc: optional ``(d,)`` float32/float64, receives ``(x * x).sum(rows)``.
        check_finite: accumulate into ``(r, r)`` and ``(d,)`` scratch buffers first and
            refuse non-finite results (no second read of ``x``); ``False`` adds straight
            into the accumulators.
    """
    _checks.check_lowrank_gram_update(acc, x, a, diag_acc)
    impl = (reference.lowrank_gram_update if warn_if_reference()
            else self_check.kernel("lowrank_gram_update", acc))
    if not check_finite:
        impl(acc, x, a, diag_acc)
        return
    update = torch.zeros_like(acc)
    diag_update = None if diag_acc is None else torch.zeros_like(diag_acc)
    impl(update, x, a, diag_update)
    _raise_if_non_finite("lowrank_gram_update", update,
                         *([] if diag_update is None else [diag_update]))
    acc.add_(update)
    if diag_acc is not None:
        diag_acc.add_(diag_update)


# Below this d the float64 factorisation is cheap and refinement's extra passes over q
# eat what the float32 factor saves (benchmarks/results/solve-cpu.md, 2-core CPU:
# float64 / mixed = 1.06 at d = 768, 1.05 at 1024, 1.3-1.6 from 1536 to 3072).
MIXED_MIN_DIM = 1024


def spd_solve(q: torch.Tensor, p: torch.Tensor, *, mixed_precision: bool = True,
              mixed_min_dim: int = MIXED_MIN_DIM) -> torch.Tensor:
    """Solves ``X @ q = p`` for symmetric positive semi-definite ``q``.

    Equal to ``p @ torch.linalg.pinv(q, hermitian=True)`` in float64: Cholesky when
    ``q`` is numerically positive definite, an eigendecomposition pseudo-inverse with
    pinv's cut-off otherwise.

    Args:
        q: ``(..., d, d)`` symmetric PSD, or ``(..., d)`` meaning ``diag(q)`` (then the
            solve is element-wise and ``1/0`` counts as 0, like pinv).
        p: ``(..., m, d)`` with the same leading (batch) dims as ``q``.
        mixed_precision: on CPU, for ``d >= mixed_min_dim``, factor in float32 and
            refine the solution in float64 (LAPACK dsposv's scheme; 1.3-1.6x faster at
            d = 1536-3072); a ``q`` whose refinement does not reach float64 accuracy
            (condition number beyond about 1e7) is solved in float64 as if this were
            False. ``False``: the float64 Cholesky for every matrix. The answers agree
            to float64 round-off times the condition number.
        mixed_min_dim: the smallest ``d`` the mixed path takes (a tuning knob).

    Returns:
        ``X`` ``(..., m, d)`` in the promoted dtype of ``q`` and ``p`` (computed in float64).
    """
    _checks.check_spd_solve(q, p)
    if warn_if_reference():
        return reference.spd_solve(q, p)
    if isinstance(mixed_min_dim, bool) or not isinstance(mixed_min_dim, int) or mixed_min_dim < 1:
        raise LormInputError(f"spd_solve: mixed_min_dim must be an int >= 1, got {mixed_min_dim!r}")
    min_dim = mixed_min_dim if mixed_precision else 0
    return _compiled_value_errors(self_check.kernel("spd_solve", q), q, p, min_dim)


def add_terms(sums: list[torch.Tensor], ts: list[torch.Tensor], kinds: list[int],
              limits: list[float], negative_rtol: float = reference.NEGATIVE_RTOL,
              probes: list[torch.Tensor] = (), *, check: bool = True) -> torch.Tensor:
    """The server's checked add of one client update: inspect every term (one read, as
    :func:`inspect_terms`), then ``sums[k] += ts[k]`` for every k, but only when no
    check fails, so a rejected update leaves every sum bit for bit as it was.

    Args:
        sums: running sums, contiguous float32/float64, ``sums[k]`` shaped like ``ts[k]``.
        ts: the terms, float32/float16/bfloat16/float64, on the sums' device.
        kinds: per term ``0`` plain (``p``, a bias), ``1`` a ``(d,)`` diagonal Gram,
            ``2`` a ``(d, d)`` Gram (checked for exact symmetry and curvature too).
        limits: per term, the largest ``max |t|`` it may have (e.g. what keeps the
            float64 sum finite).
        negative_rtol: a Gram's diagonal entry below ``-negative_rtol * max|t|``, or a
            probe's ``v.T q v`` below ``-negative_rtol * sum|diag q|``, fails it.
        probes: one ``(P, d)`` matrix of random directions (rows) per ``kinds == 2``
            term, in order (drawn by the caller, secret to it).
        check: validate the arguments in Python first (clear ``LormInputError``s).
            ``False`` leaves it to the compiled kernel's own checks (``RuntimeError``),
            for a caller that built the lists itself (Python lists of tensors, ints and
            floats, passed on as they are) and calls once per update.

    Returns:
        ``(n, 5)`` float64 on the CPU: the :func:`inspect_terms` row of each term and its
        verdict (``reference.ACCEPTED`` = 0, ``NOT_FINITE``, ``NOT_SYMMETRIC``,
        ``NEGATIVE_DIAGONAL``, ``WOULD_OVERFLOW``, ``NEGATIVE_CURVATURE``); the terms were
        added iff every verdict is 0. The curvature is probed only when every other
        check passed.
    """
    if check or backend() == "reference":
        _checks.check_add_terms(sums, ts, kinds, limits, probes)
    impl = (reference.add_terms if warn_if_reference()
            else self_check.kernel("add_terms", ts[0] if len(ts) else None))
    if check:  # normalise what a user may pass (tuples, numpy numbers); trusted lists go as they are
        sums, ts, probes = list(sums), list(ts), list(probes)
        kinds, limits = [int(k) for k in kinds], [float(x) for x in limits]
    return impl(sums, ts, kinds, limits, float(negative_rtol), probes)


def inspect_terms(ts: list[torch.Tensor], symmetric: list[bool] | None = None
                  ) -> list[tuple[float, bool, bool, float]]:
    """One read of each term a server is about to add, all in one call.

    Args:
        ts: tensors of any shape, float32/float16/bfloat16/float64, on one device.
        symmetric: per tensor, compare ``t[i, j]`` with ``t[j, i]`` bit for bit (that
            ``t`` must be ``(d, d)``); default all False.

    Returns:
        Per tensor ``(max |t| with NaNs skipped, every value finite, exactly symmetric,
        smallest diagonal entry)``: the diagonal of a square ``t`` checked as symmetric,
        every entry of any other ``t`` (a ``(d,)`` Gram is a diagonal); NaNs skipped,
        +inf when there is none.
    """
    flags = [False] * len(ts) if symmetric is None else [bool(s) for s in symmetric]
    _checks.check_inspect_terms(ts, flags)
    if not ts:
        return []
    impl = (reference.inspect_terms if warn_if_reference()
            else self_check.kernel("inspect_terms", ts[0]))
    rows = impl(list(ts), [int(f) for f in flags]).tolist()
    return [(row[0], bool(row[1]), bool(row[2]), row[3]) for row in rows]
