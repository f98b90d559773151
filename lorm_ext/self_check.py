"""The self-check of the CUDA kernels: at the first op call on CUDA tensors in a process,
every op with a CUDA kernel runs on small random inputs and is compared with
:mod:`lorm_ext.reference` within its error bound (``lorm_ext/_check_cases.py``).

``LORM_CUDA_CHECK`` (read at that first call):

- unset, empty or ``on``: check; an op whose kernel disagrees (or raises) gets one
  :class:`~lorm_ext.errors.SelfCheckWarning` naming it with the error and the bound,
  and runs the reference on CUDA for the rest of the process. Only the failing ops fall
  back: every op is checked on its own, and the others keep their kernels.
- ``strict``: check; a failure raises :class:`~lorm_ext.errors.SelfCheckError` naming
  the op(s), at that first call and at every later call of a failed op on CUDA.
- ``off``: no check; the kernels run as they are.

The check is one :class:`Guard` per device type (``CUDA_GUARD``); ops ask it through
:func:`kernel`, which touches nothing for tensors on other devices. :func:`self_check`
runs the cases for any device and any kernels, so the logic is tested on the CPU with
the CPU kernels and with deliberately wrong ones (``tests/test_self_check.py``).
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

import torch

from . import _loader, reference
from ._check_cases import CASES, Kernel
from .errors import SelfCheckError, SelfCheckWarning

ENV = "LORM_CUDA_CHECK"
MODES = ("on", "strict", "off")
SEED = 28  # every case draws its inputs from a generator of its own, seeded with this

OPS = ("gram_update", "lowrank_gram_update", "spd_solve", "inspect_terms", "add_terms")


def _reference_spd_solve(q: torch.Tensor, p: torch.Tensor, mixed_min_dim: int = 1024) -> torch.Tensor:
    """reference.spd_solve with the schema's signature (the reference has no mixed path)."""
    return reference.spd_solve(q, p)


# The reference of every op, called like torch.ops.lorm_ext.<op>.
REFERENCE: dict[str, Kernel] = {
    "gram_update": reference.gram_update,
    "lowrank_gram_update": reference.lowrank_gram_update,
    "spd_solve": _reference_spd_solve,
    "inspect_terms": reference.inspect_terms,
    "add_terms": reference.add_terms,
}


@dataclass(frozen=True)
class Finding:
    """One case: the kernel's error against the reference and the bound it must meet, or
    what the kernel raised (then error is inf and bound NaN)."""
    op: str
    case: str
    metric: str
    error: float
    bound: float
    raised: str | None = None

    @property
    def passed(self) -> bool:
        return self.raised is None and self.error <= self.bound  # a NaN error fails

    def describe(self) -> str:
        if self.raised is not None:
            return f"{self.op} ({self.case}): the kernel raised {self.raised}"
        verdict = "within" if self.passed else "exceeds"
        return (f"{self.op} ({self.case}): {self.metric} = {self.error:.3g} {verdict} its "
                f"bound {self.bound:.3g}")


class _KernelRaised(Exception):
    """Carries an exception of the kernel under test (not of the reference or the bounds,
    which propagate: they would be lorm's bugs, not the device's)."""


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # an asynchronous kernel error surfaces here, in its case


def self_check(device: torch.device | str, kernels: Mapping[str, Kernel]) -> list[Finding]:
    """Runs every case of the ops in ``kernels`` on ``device``.

    Args:
        device: where the inputs are drawn and the kernels run (the reference runs on
            CPU copies, in float64).
        kernels: op name -> callable with the op's schema signature (as
            ``torch.ops.lorm_ext.<op>``): ``gram_update(acc, x)``,
            ``lowrank_gram_update(acc, x, a, diag_acc)``, ``spd_solve(q, p)``,
            ``inspect_terms(ts, symmetric)``, ``add_terms(sums, ts, kinds, limits,
            negative_rtol, probes)``. Ops not in it are not checked.

    Returns:
        One :class:`Finding` per case run (16 for all ops), in the order of ``CASES``.
        Inputs come from a ``torch.Generator`` on ``device`` seeded with ``SEED`` per
        case; the global RNG is not touched.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    gen = torch.Generator(device=device)
    findings = []
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        for case in CASES:
            if case.op not in kernels:
                continue
            gen.manual_seed(SEED)
            findings.append(_run(case, kernels[case.op], device, gen))
    return findings


def _run(case, kernel: Kernel, device: torch.device, gen: torch.Generator) -> Finding:
    def call(*args):
        try:
            out = kernel(*args)
            _synchronize(device)
            return out
        except Exception as exc:  # noqa: BLE001 -- any failure of the kernel is a finding
            raise _KernelRaised(f"{type(exc).__name__}: {exc}") from exc

    try:
        error, bound = case.run(call, REFERENCE[case.op], gen, device)
    except _KernelRaised as raised:
        return Finding(case.op, case.name, case.metric, math.inf, math.nan, str(raised))
    return Finding(case.op, case.name, case.metric, error, bound)


def mode() -> str:
    """``LORM_CUDA_CHECK`` as one of MODES (unset or empty: ``on``); ValueError otherwise."""
    value = os.environ.get(ENV, "").strip().lower() or "on"
    if value not in MODES:
        raise ValueError(f"{ENV}={os.environ[ENV]!r}: expected one of {', '.join(MODES)} (unset: on)")
    return value


class Guard:
    """The self-check of one device type's kernels, run once per process, and the ops
    that fall back to the reference there afterwards.

    Args:
        device_type: the tensors it guards (``"cuda"``; the tests use ``"cpu"``).
        kernels: returns the kernels to check (op name -> callable), or None when there
            are none for this device type (e.g. no CUDA kernels loaded).
        why_none: what :meth:`outcome` says when ``kernels()`` returns None.
    """

    def __init__(self, device_type: str, kernels: Callable[[], Mapping[str, Kernel] | None],
                 why_none: str = "no kernels for this device") -> None:
        self.device_type = device_type
        self.tensor_flag = f"is_{device_type}"  # t.is_cuda: cheaper than t.device.type
        assert hasattr(torch.Tensor, self.tensor_flag), device_type
        self._kernels = kernels
        self._why_none = why_none
        self._lock = threading.RLock()
        self._running = False
        self.done = False
        self.mode: str | None = None
        self.device: torch.device | None = None
        self.findings: list[Finding] | None = None  # None: the check did not run
        self.failed: frozenset[str] = frozenset()
        self.runs = 0  # times the cases ran: 0 or 1

    def ensure(self, device: torch.device) -> None:
        """Runs the check on ``device`` unless it ran (or was skipped) in this process."""
        if not self.done:
            self._check(device)

    def falls_back(self, op: str, device: torch.device) -> bool:
        """Whether ``op`` must run the reference on ``device`` (of this guard's type).
        The first call runs the check; in strict mode a failed op raises SelfCheckError."""
        self.ensure(device)
        if op not in self.failed:
            return False
        if self.mode == "strict":
            raise SelfCheckError(f"{op}: its {self.device_type} kernel failed lorm_ext's self-check "
                                 f"in this process ({ENV}=strict): {self._failures()}")
        return True

    def _check(self, device: torch.device) -> None:
        if torch.compiler.is_compiling():
            return  # never trace the check; it runs at the first eager call
        with self._lock:  # other threads wait for the one that checks
            if self.done or self._running:
                return  # done, or a kernel under test calling an op in this thread
            self._running = True
            try:
                self._check_locked(device)
            finally:
                self._running = False

    def _check_locked(self, device: torch.device) -> None:
        self.mode = mode()
        kernels = self._kernels() if self.mode != "off" else None
        if kernels is not None:
            self.device = device
            self.runs += 1
            self.findings = self_check(device, kernels)
            self.failed = frozenset(f.op for f in self.findings if not f.passed)
        self.done = True
        if not self.failed:
            return
        if self.mode == "strict":
            raise SelfCheckError(f"lorm_ext self-check on {device} failed ({ENV}=strict): "
                                 f"{self._failures()}")
        warnings.warn(
            f"lorm_ext self-check on {device} failed for {', '.join(sorted(self.failed))}: "
            f"these ops run lorm_ext.reference (slower) on {self.device_type} for the rest of this "
            f"process ({ENV}=strict raises instead, {ENV}=off skips the check): {self._failures()}",
            SelfCheckWarning, stacklevel=7)  # the caller of the lorm_ext op

    def _failures(self) -> str:
        return "; ".join(f.describe() for f in self.findings or [] if not f.passed)

    def outcome(self) -> str:
        """One line: whether the check ran in this process and what it found."""
        if not self.done and self._kernels() is None:
            return f"does not apply: {self._why_none}"
        if not self.done:
            return (f"not run in this process (it runs at the first op call on {self.device_type} "
                    f"tensors; `python -m lorm_ext.info --self-check` runs it now)")
        if self.findings is None:
            return f"skipped ({ENV}=off)" if self.mode == "off" else f"does not apply: {self._why_none}"
        if not self.failed:
            worst = max((f.error / f.bound for f in self.findings if f.bound > 0), default=0.0)
            return (f"passed on {self.device}: {len(self.findings)} cases, every error within its bound "
                    f"(largest error / bound: {worst:.2g}; {ENV}={self.mode})")
        then = ("using them on it raises SelfCheckError" if self.mode == "strict"
                else f"they run lorm_ext.reference on {self.device_type}")
        return (f"FAILED on {self.device} for {', '.join(sorted(self.failed))} ({ENV}={self.mode}; "
                f"{then}): {self._failures()}")


def _cuda_kernels() -> Mapping[str, Kernel] | None:
    if _loader.backend() != "cuda":
        return None
    return {op: getattr(torch.ops.lorm_ext, op) for op in OPS}


CUDA_GUARD = Guard("cuda", _cuda_kernels, why_none="no CUDA kernels loaded (see `explanation`)")
GUARD = CUDA_GUARD  # the guard kernel() asks; the tests swap in one for the CPU


def kernel(op: str, t: torch.Tensor | None) -> Kernel:
    """What runs ``op`` for tensors on ``t``'s device: ``torch.ops.lorm_ext.<op>``, or the
    reference (``REFERENCE[op]``) when the device's kernel failed the self-check. Tensors
    on other devices than the guard's (the CPU) cost one flag read (``t.is_cuda``)."""
    guard = GUARD
    if t is not None and getattr(t, guard.tensor_flag) and guard.falls_back(op, t.device):
        return REFERENCE[op]
    return getattr(torch.ops.lorm_ext, op)


def outcome() -> str:
    """The outcome of the CUDA self-check in this process, one line (``lorm_ext.info``)."""
    return GUARD.outcome()
