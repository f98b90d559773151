"""The cases of the self-check (:mod:`lorm_ext.self_check`): small inputs per op, one
kernel call each, and the error bound its result must meet against the reference.

Every tolerance is an error bound of the method, as in ``tests/bounds.py`` (N. J.
Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.): ``u`` is the unit
round-off of the working precision and ``gamma(n) = n u / (1 - n u)`` bounds n
accumulated roundings (Lemma 3.1); a sum of n products in any order is within
``gamma(n) sum |x_k y_k|`` of the exact one (eq. 3.13), however it is blocked, threaded
or vectorised. The kernel and the reference are each within such a bound of the exact
value, so they may be twice that apart. A kernel fails a case when its error exceeds
the bound anywhere (a NaN fails too).

Each case's ``run(kernel, oracle, gen, device)`` draws its inputs on ``device`` from
``gen``, calls ``kernel`` there and ``oracle`` (the reference) on CPU copies, and returns
``(error, bound)``: for componentwise bounds the entry whose error is largest relative
to its bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

Kernel = Callable[..., Any]
Measure = tuple[float, float]  # (error, bound)

F32, F64 = torch.float32, torch.float64


@dataclass(frozen=True)
class Case:
    op: str
    name: str
    metric: str  # what error and bound measure, for messages
    run: Callable[[Kernel, Kernel, torch.Generator, torch.device], Measure]


def gamma(n: int, dtype: torch.dtype) -> float:
    """gamma(n) = n u / (1 - n u), u = eps / 2 of dtype (tests/bounds.py)."""
    nu = n * torch.finfo(dtype).eps / 2
    return nu / (1 - nu)


def _cuda_fp32_matmul_precision() -> str:
    """torch's setting for float32 matmuls on CUDA: "tf32" or "ieee"/"none" (full)."""
    precision = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
    if precision is None:  # a torch without the new API
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    return precision


def product_error(device: torch.device, acc_dtype: torch.dtype) -> float:
    """Relative error of one product in a float32 matmul on ``device``, before the sum's
    own roundings: (1 + u)^2 - 1 with u = 2^-11 when torch lets CUDA matmuls round
    float32 inputs to TF32 (``torch.backends.cuda.matmul.fp32_precision = "tf32"``,
    ``allow_tf32``, ``set_float32_matmul_precision("high")``): the blocked Gram paths call
    torch's mm, so the user's setting applies to them. 0 otherwise (float32 products
    are exact in the float32 sum's error analysis)."""
    if device.type != "cuda" or acc_dtype != F32 or _cuda_fp32_matmul_precision() != "tf32":
        return 0.0
    return (1 + 2.0**-11) ** 2 - 1


def _randn(gen: torch.Generator, device: torch.device, *shape: int,
           dtype: torch.dtype = F32) -> torch.Tensor:
    return torch.randn(shape, generator=gen, device=device).to(dtype)


def _rows(gen, device, lead: tuple[int, ...], d: int, dtype: torch.dtype,
          strided: bool) -> torch.Tensor:
    """Rows (*lead, d); strided: every other column of a (*lead, 2 d) buffer (the
    kernels' scalar loads; contiguous rows with d % 8 == 0 take the vector loads)."""
    if strided:
        return _randn(gen, device, *lead, 2 * d, dtype=dtype)[..., ::2]
    return _randn(gen, device, *lead, d, dtype=dtype)


def _worst(diff: torch.Tensor, bound: torch.Tensor) -> Measure:
    """(|difference|, bound) at the entry where the difference is largest relative to its
    bound; a NaN difference counts as the worst, a non-zero one over a zero bound too."""
    diff, bound = diff.double().flatten(), bound.double().expand_as(diff).flatten()
    if diff.numel() == 0:
        return 0.0, 0.0
    ratio = torch.where(diff == 0, 0.0, diff / bound)
    ratio = torch.where(diff.isnan(), math.inf, ratio)
    worst = int(ratio.argmax())
    return diff[worst].item(), bound[worst].item()


def _ratio(measure: Measure) -> float:
    """error / bound; 0 for no error, inf for a NaN error or a non-zero one over bound 0."""
    error, bound = measure
    if error == 0:
        return 0.0
    return error / bound if bound > 0 and not math.isnan(error) else math.inf


def _exact(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> Measure:
    """Largest |difference| over tensors that must be equal (NaN equals NaN); bound 0."""
    error = 0.0
    for a, b in zip(ours, theirs, strict=True):
        a, b = a.double().cpu(), b.double().cpu()
        if a.shape != b.shape:
            return math.inf, 0.0
        same = (a == b) | (a.isnan() & b.isnan())
        diff = torch.where(same, 0.0, (a - b).abs().nan_to_num(nan=math.inf))
        error = max(error, diff.max().item() if diff.numel() else 0.0)
    return error, 0.0


# -- gram_update ----------------------------------------------------------------------

def _gram(full: bool, x_dtype: torch.dtype, acc_dtype: torch.dtype, d: int, strided: bool):
    def run(kernel, oracle, gen, device) -> Measure:
        x = _rows(gen, device, (3, 11), d, x_dtype, strided)
        start = _randn(gen, device, *((d, d) if full else (d,)), dtype=acc_dtype)
        acc = start.clone()
        kernel(acc, x)
        ref = start.cpu().clone()
        oracle(ref, x.cpu())
        rows = x.cpu().reshape(-1, d).double().abs()
        # start + n products per entry, summed in the accumulator's dtype (BLAS/cuBLAS and
        # the CUDA diagonal work in it; the CPU diagonal in float64), plus one rounding if
        # the update is formed first and then added: gamma(n + 2) (|start| + |X|^T |X|)
        # (tests/bounds.gram_bound with start and extra=1). The reference (float64, cast,
        # added in acc's dtype) is within that too, hence the factor 2.
        # With TF32 on, each product of the full Gram is off by product_error() more:
        # (gamma + t (1 + gamma)) for the kernel.
        magnitude = start.cpu().double().abs() + (rows.T @ rows if full else (rows * rows).sum(0))
        g, t = gamma(rows.shape[0] + 2, acc_dtype), product_error(device, acc_dtype) if full else 0.0
        bound = (2 * g + t * (1 + g)) * magnitude
        return _worst((acc.cpu().double() - ref.double()).abs(), bound)
    return run


# -- lowrank_gram_update --------------------------------------------------------------

def _lowrank(r: int, d: int, acc_dtype: torch.dtype, with_diag: bool):
    def run(kernel, oracle, gen, device) -> Measure:
        x = _rows(gen, device, (3, 11), d, F32, strided=False)
        a = _randn(gen, device, r, d) / d**0.5
        start = _randn(gen, device, r, r, dtype=acc_dtype)
        diag_start = _randn(gen, device, d, dtype=acc_dtype) if with_diag else None
        acc = start.clone()
        diag = None if diag_start is None else diag_start.clone()
        kernel(acc, x, a, diag)
        ref, diag_ref = start.cpu().clone(), None if diag_start is None else diag_start.cpu().clone()
        oracle(ref, x.cpu(), a.cpu(), diag_ref)
        rows = x.cpu().reshape(-1, d).double().abs()
        n = rows.shape[0]
        # z = x a^T: a d-term dot product per entry (gamma(d + 1) |x| |a|^T, a's cast to
        # acc's dtype included); each entry of z^T z a sum of n products of those, plus
        # start and the final add: gamma(n + 2 d + 4) (|start| + W^T W), W = |X| |a|^T
        # (tests/test_lowrank_gram_update.projected_gram_bound, with start). The fused
        # CUDA kernel computes in float32, the blocked path in acc's dtype: the bound is in
        # acc's dtype, which is float32 whenever the fused kernel runs. Twice: kernel and
        # reference. With TF32 on (the blocked path's two mm calls: z = x a^T, then z^T z),
        # z is off by t W more, which enters both factors of z_k z_l, and z's rounding to
        # TF32 adds t: 3 t more to first order, 4 t allowed for the higher-order terms
        # (t = product_error() ~ 1e-3, gamma < 1e-5 here).
        w = rows @ a.cpu().double().abs().T
        diffs = [(acc.cpu().double() - ref.double()).abs().flatten()]
        g, t = gamma(n + 2 * d + 4, acc_dtype), product_error(device, acc_dtype)
        bounds = [((2 * g + 4 * t) * (start.cpu().double().abs() + w.T @ w)).flatten()]
        if with_diag:
            # as the diagonal gram_update: gamma(n + 2) (|start| + sum x^2), twice
            diffs.append((diag.cpu().double() - diag_ref.double()).abs())
            diag_magnitude = diag_start.cpu().double().abs() + (rows * rows).sum(0)
            bounds.append(2 * gamma(n + 2, acc_dtype) * diag_magnitude)
        return _worst(torch.cat(diffs), torch.cat(bounds))
    return run


# -- spd_solve ------------------------------------------------------------------------

def _eta(d: int) -> float:
    """d gamma(3 d + 1): normwise relative backward error of a float64 d x d Cholesky
    solve (Higham Thm 10.4; tests/bounds.solve_eta); the eigendecomposition pinv is
    backward stable with a smaller one."""
    return d * gamma(3 * d + 1, F64)


def _spd(batch: tuple[int, ...], d: int):
    def run(kernel, oracle, gen, device) -> Measure:
        x = _randn(gen, device, *batch, 2 * d + 4, d, dtype=F64)
        q = x.mT @ x + torch.eye(d, dtype=F64, device=device)
        p = _randn(gen, device, *batch, 4, d, dtype=F64)
        ours = kernel(q, p).cpu()
        ref = oracle(q.cpu(), p.cpu())
        # each answer within b = kappa eta / (1 - kappa eta) of the exact X, normwise and
        # relative (perturbation bound, Higham 7.2), so 2 b / (1 - b) apart
        # (tests/test_spd_solve.agreement_bound); q = X^T X + I keeps kappa small.
        w = torch.linalg.eigvalsh(q.cpu())
        k_eta = (w[..., -1] / w[..., 0]).max().item() * _eta(d)
        b = k_eta / (1 - k_eta)
        error = ((ours.double() - ref).norm() / ref.norm()).item()
        return error, 2 * b / (1 - b)
    return run


def _spd_diagonal(d: int):
    def run(kernel, oracle, gen, device) -> Measure:
        q = torch.rand(d, generator=gen, device=device, dtype=F64) + 0.5
        q[3], q[7] = 0.0, 5e-324  # a zero and a subnormal: both count as 0 (pinv's cut-off)
        p = _randn(gen, device, 4, d, dtype=F64)
        ours = kernel(q, p).cpu()
        ref = oracle(q.cpu(), p.cpu())
        # element-wise p_j * fl(1 / q_j), two roundings (gamma(2) |X| each); the reference's
        # pinv of diag(q) reduces to the same (LAPACK's eigendecomposition of a diagonal
        # matrix is exact), so the two are within 2 gamma(2) (1 + gamma(2)) |X_ref| <=
        # 2 gamma(3) |X_ref|; cut-off columns must be exactly 0 in both.
        return _worst((ours.double() - ref).abs(), 2 * gamma(3, F64) * ref.abs())
    return run


def _spd_singular(rank: int, d: int):
    def run(kernel, oracle, gen, device) -> Measure:
        x = _randn(gen, device, rank, d, dtype=F64)
        q = x.T @ x  # rank-deficient: Cholesky's pivots fail, the pinv path answers
        p = _randn(gen, device, 4, d, dtype=F64)
        ours = kernel(q, p).cpu().double()
        # A rank-deficient q has no forward error bound; measured instead is what a
        # backward-stable pinv solve guarantees (tests/bounds.assert_pinv_solution, one
        # term), on the reference's own spectral decomposition of q (float64, CPU): with
        # P the projector onto the eigenvectors above pinv's cut-off d eps w_max,
        # kappa_r = w_max / the smallest kept eigenvalue, e = eta:
        #   ||X (I - P)|| <= (2 kappa_r + 1) e ||X||
        #   ||(X q - p) P|| <= e w_max ||X|| + eta ||p|| + gamma(d + 1) ||p||
        #                      + 2 kappa_r e ||p (I - P)||
        # error / bound are those of the worse of the two.
        q, p = q.cpu(), p.cpu()
        w, v = torch.linalg.eigh(q)
        kept = w > d * torch.finfo(F64).eps * w[-1]
        proj = v[:, kept] @ v[:, kept].T
        off = torch.eye(d, dtype=F64) - proj
        e, kappa_r = _eta(d), (w[-1] / w[kept][0]).item()
        x_norm, p_norm = ours.norm().item(), p.norm().item()
        outside = ((ours @ off).norm().item(), (2 * kappa_r + 1) * e * x_norm)
        residual = (((ours @ q - p) @ proj).norm().item(),
                    e * w[-1].item() * x_norm + e * p_norm + gamma(d + 1, F64) * p_norm
                    + 2 * kappa_r * e * (p @ off).norm().item())
        return max(outside, residual, key=_ratio)
    return run


# -- inspect_terms and add_terms -------------------------------------------------------

def _terms(gen, device, faulty: bool) -> tuple[list[torch.Tensor], list[int]]:
    """A symmetric float32 (33, 33), a float16 (3, 50), a bfloat16 (7,) and a float64
    (5, 5) flagged symmetric; faulty: one asymmetric entry, a NaN and an Inf, a negative
    minimum, a NaN on a checked diagonal."""
    g = _randn(gen, device, 33, 33)
    ts = [(g + g.T) / 2, _randn(gen, device, 3, 50, dtype=torch.float16),
          _randn(gen, device, 7, dtype=torch.bfloat16), torch.eye(5, dtype=F64, device=device) * 2]
    if faulty:
        ts[0][4, 20] += 1
        ts[1][1, 7], ts[1][2, 9] = float("nan"), float("inf")
        ts[2][5] = -3
        ts[3][2, 2] = float("nan")
    return ts, [1, 0, 0, 1]


def _inspect(faulty: bool):
    def run(kernel, oracle, gen, device) -> Measure:
        ts, symmetric = _terms(gen, device, faulty)
        ours = kernel(ts, symmetric)
        # maxima, minima and flags involve no rounding: equal or wrong
        return _exact([ours], [oracle([t.cpu() for t in ts], symmetric)])
    return run


def _add(rejected: bool):
    def run(kernel, oracle, gen, device) -> Measure:
        d = 16
        x = _randn(gen, device, 40, d)
        square = x.T @ x
        square = (square + square.T) / 2  # exactly symmetric
        if rejected:  # non-negative diagonal, symmetric, but v = e0 - e1 sees 1 + 1 - 6 < 0
            square = torch.eye(d, device=device)
            square[0, 1] = square[1, 0] = 3.0
        ts = [square, (x * x).sum(0), _randn(gen, device, 3, d)]
        kinds, limits = [2, 1, 0], [1e30, 1e30, 1e30]
        probes = [_randn(gen, device, 8, d)]
        probes[0][0] = 0.0
        probes[0][0, 0], probes[0][0, 1] = 1.0, -1.0
        sums = [_randn(gen, device, *t.shape, dtype=F64) for t in ts]
        ours = [s.clone() for s in sums]
        found = kernel(ours, ts, kinds, limits, 1e-4, probes)
        theirs = [s.cpu().clone() for s in sums]
        expected = oracle(theirs, [t.cpu() for t in ts], kinds, limits, 1e-4, [v.cpu() for v in probes])
        # findings and verdicts exact; each sum one correctly rounded float64 addition
        # (or untouched): the same bits on every device
        return _exact([found, *ours], [expected, *theirs])
    return run


DIFF = "max |kernel - reference|"
SOLVE = "||X - X_ref|| / ||X_ref||"
TABLE = "max |findings, sums - reference|"
BF16, F16 = torch.bfloat16, torch.float16

CASES: tuple[Case, ...] = (
    Case("gram_update", "full, float32 rows into float32", DIFF, _gram(True, F32, F32, 24, False)),
    Case("gram_update", "full, bfloat16 rows into float32", DIFF, _gram(True, BF16, F32, 24, False)),
    Case("gram_update", "full, strided float64 rows into float64", DIFF, _gram(True, F64, F64, 21, True)),
    Case("gram_update", "diagonal, float32 rows into float32", DIFF, _gram(False, F32, F32, 24, False)),
    Case("gram_update", "diagonal, strided float16 rows into float64", DIFF, _gram(False, F16, F64, 21, True)),
    Case("lowrank_gram_update", "r = 5 with diag_acc, float32", DIFF, _lowrank(5, 24, F32, True)),
    Case("lowrank_gram_update", "r = 33 (above the fused kernel's 32), float32", DIFF,
         _lowrank(33, 40, F32, False)),
    Case("lowrank_gram_update", "r = 6 with diag_acc, float64", DIFF, _lowrank(6, 24, F64, True)),
    Case("spd_solve", "batch of 3, d = 12 (batched Cholesky)", SOLVE, _spd((3,), 12)),
    Case("spd_solve", "d = 130 (Cholesky per matrix)", SOLVE, _spd((), 130)),
    Case("spd_solve", "diagonal q with a zero and a subnormal", "max |X - X_ref|", _spd_diagonal(16)),
    Case("spd_solve", "rank 5 of 12 (pinv)", "pinv residual or part outside q's range",
         _spd_singular(5, 12)),
    Case("inspect_terms", "clean terms", "max |findings - reference|", _inspect(False)),
    Case("inspect_terms", "terms with NaN, Inf, asymmetry", "max |findings - reference|", _inspect(True)),
    Case("add_terms", "accepted update", TABLE, _add(False)),
    Case("add_terms", "rejected update (negative curvature)", TABLE, _add(True)),
)
