"""Error bounds that follow from the methods, for tests that compare two numerical paths.

Every tolerance of a test that compares two computations (two summation orders, a mixed
and a float64 solve, a kernel and torch) is one of these bounds, so it holds on every
CPU (AVX2 or AVX-512, any BLAS, any thread count) and still fails when a path is wrong.
References: N. J. Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.
(SIAM 2002): Lemma 3.1 and eq. (3.13) for sums and products, Theorem 10.4 for Cholesky.

- ``u`` is the unit round-off of the working precision (half of ``finfo.eps``);
  ``gamma(n) = n u / (1 - n u)`` bounds n accumulated roundings (Lemma 3.1).
- A sum of n products in any order (a dot product, an entry of X^T X, however it is
  blocked, threaded or vectorised) has ``|fl(s) - s| <= gamma(n) * sum |x_k y_k|``
  (eq. 3.13): componentwise, so the bound scales with the entries it concerns.
- A backward-stable SPD solve of a d x d system: Cholesky gives ``(Q + dQ) x = p`` with
  ``|dQ| <= gamma(3d + 1) |R^T||R|`` and ``|| |R^T||R| ||_2 <= d ||Q||_2``; the normwise
  relative forward error is then at most ``kappa(Q) * eta / (1 - kappa(Q) * eta)`` with
  ``eta = d * gamma(3d + 1)`` (Theorem 10.4 and the perturbation bound 7.2 / 10.6).
  Worst case, not typical: the tests' matrices sit far below it, and it is still far
  below float32 accuracy for the cases where that is what a test must tell apart.
"""

from __future__ import annotations

import torch


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = eps / 2 of a floating dtype (2^-53 for float64, 2^-24 for float32)."""
    return torch.finfo(dtype).eps / 2


def gamma(n: int, dtype: torch.dtype) -> float:
    """gamma_n = n u / (1 - n u): the bound on n accumulated relative roundings."""
    nu = max(n, 1) * unit_roundoff(dtype)
    assert nu < 1, f"gamma({n}) is undefined in {dtype}: n u >= 1"
    return nu / (1 - nu)


def gram_bound(rows: torch.Tensor, dtype: torch.dtype, extra: int = 0,
               start: torch.Tensor | None = None) -> torch.Tensor:
    """Componentwise bound (d, d) on the rounding error of [start +] rows^T rows (rows:
    (n, d)), summed in any order in `dtype`: gamma(n [+ 1]) (|start| + |rows|^T |rows|)
    (eq. 3.13; the start value is one more term). `extra` counts further roundings of each
    entry (a final cast to the accumulator, a subtraction)."""
    a = rows.double().cpu().abs()
    total = a.T @ a
    if start is not None:
        total = total + start.double().cpu().abs()
    return gamma(rows.shape[0] + extra + (start is not None), dtype) * total


def diag_gram_bound(rows: torch.Tensor, dtype: torch.dtype, extra: int = 0) -> torch.Tensor:
    """The diagonal of gram_bound, (d,): gamma(n + extra) sum_i x_ij^2."""
    return gamma(rows.shape[0] + extra, dtype) * (rows.double().cpu() ** 2).sum(0)


def solve_eta(d: int, dtype: torch.dtype = torch.float64) -> float:
    """eta = d gamma(3d + 1): the normwise relative backward error of a d x d Cholesky
    solve (Theorem 10.4 with || |R^T||R| ||_2 <= d ||Q||_2). It also covers the other two
    ways spd_solve answers: refinement from a float32 factor stops at dsposv's test
    |r|_max <= |x|_max |Q|_inf eps sqrt(d), a backward error <= 2 d^1.5 u <= eta; the
    eigendecomposition pseudo-inverse is normwise backward stable with an O(d^2 u)
    backward error (Householder tridiagonalisation, Higham ch. 19)."""
    return d * gamma(3 * d + 1, dtype)


def condition_number(q: torch.Tensor) -> float:
    """kappa_2 of symmetric q (..., d, d), the largest over a batch; inf when singular."""
    eigenvalues = torch.linalg.eigvalsh(q.double())
    smallest, largest = eigenvalues[..., 0], eigenvalues[..., -1]
    if (smallest <= 0).any():
        return float("inf")
    return (largest / smallest).max().item()


def spd_solve_bound(q: torch.Tensor, dtype: torch.dtype = torch.float64) -> float:
    """Normwise relative forward error bound of solving X q = p, q (..., d, d) SPD, the
    largest over a batch: kappa eta / (1 - kappa eta) (perturbation bound, Higham 7.2).
    Infinite when it says nothing (kappa eta >= 1: the data do not determine X)."""
    k_eta = condition_number(q) * solve_eta(q.shape[-1], dtype)
    return k_eta / (1 - k_eta) if k_eta < 1 else float("inf")


def assert_bound_tells_float32_apart(q: torch.Tensor, bound: float) -> None:
    """A float64 bound is only a test of float64 accuracy if an answer of float32
    accuracy would break it: a float32 solve's error is of the size kappa u_32 (first
    order, the same perturbation bound), so the bound must lie below that."""
    assert bound < condition_number(q) * unit_roundoff(torch.float32), (
        f"bound {bound:.2e} would not tell a float32 answer from a float64 one")


def assert_pinv_solution(x: torch.Tensor, q: torch.Tensor, p: torch.Tensor, terms: int = 1,
                         p_scale: float | None = None) -> None:
    """x (m, d) solves x q = p in pinv's sense to within what float64 data determine,
    for one symmetric PSD q (d, d) of any condition or rank. P projects onto q's numerical
    range (eigenvalues above pinv's cut-off d eps lambda_max), kappa_r = lambda_max over
    the smallest kept eigenvalue.

    Backward errors allowed: the solve's, eta = solve_eta(d), relative to ||q||; when q
    and p were summed from `terms` client terms (each entry a sum of at most d + terms
    products, computed by the code and by the test in different orders), the sums'
    roundings too: terms d gamma(d + terms) ||q|| for q (||sum |Q_i| ||_2 <= sqrt(d)
    sum ||Q_i||_2 <= sqrt(d) terms ||q||_2 for PSD Q_i) and gamma(d + terms) p_scale
    for p (p_scale: sum_i || |P_i| ||_F of the terms' own magnitudes; default ||p||).
    A backward-stable solver's range is then off by an angle sin(theta) <= kappa_r e
    (Davis-Kahan, gap lambda_r), twice that between the solver's and this check's
    eigendecompositions. So, with e the q allowance:
      the part of x outside the range: ||x (I - P)|| <= (2 kappa_r + 1) e ||x||;
      the residual inside it: ||(x q - p) P|| <= e ||q||_2 ||x|| + eta ||p||
                              + gamma(d + terms) p_scale + 2 kappa_r e ||p (I - P)||.
    Unlike a forward error, both stay meaningful when kappa e >= 1."""
    x, q, p = x.double().cpu(), q.double().cpu(), p.double().cpu()
    d = q.shape[-1]
    w, v = torch.linalg.eigh(q)
    if d == 0 or w[-1] <= 0:  # pinv(0) = 0
        assert torch.equal(x, torch.zeros_like(x))
        return
    kept = w > d * torch.finfo(torch.float64).eps * w[-1]
    proj = v[:, kept] @ v[:, kept].T
    off = torch.eye(d, dtype=torch.float64) - proj
    eta, kappa_r = solve_eta(d), (w[-1] / w[kept][0]).item()
    e = eta + (terms * d * gamma(d + terms, torch.float64) if terms > 1 else 0.0)
    p_scale = p.norm().item() if p_scale is None else p_scale
    outside = (x @ off).norm().item()
    assert outside <= (2 * kappa_r + 1) * e * x.norm().item(), ("outside the range", outside)
    residual = ((x @ q - p) @ proj).norm().item()
    allowed = e * w[-1].item() * x.norm().item() + eta * p.norm().item() \
        + gamma(d + terms, torch.float64) * p_scale + 2 * kappa_r * e * (p @ off).norm().item()
    assert residual <= allowed, ("residual on the range", residual, allowed)


def normwise_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b||_F / ||b||_F (0 when both are zero)."""
    a, b = a.double().cpu(), b.double().cpu()
    scale = b.norm().item()
    return (a - b).norm().item() / scale if scale > 0 else (a - b).norm().item()


def assert_within(a: torch.Tensor, b: torch.Tensor, bound: torch.Tensor) -> None:
    """|a - b| <= bound entry by entry (bound broadcasts; all on the CPU in float64)."""
    diff = (a.double().cpu() - b.double().cpu()).abs()
    excess = diff - bound.double().cpu()
    worst = int(excess.argmax()) if excess.numel() else 0
    assert excess.numel() == 0 or excess.max() <= 0, (
        f"entry {worst}: |difference| {diff.flatten()[worst].item():.3e} exceeds its bound "
        f"{bound.double().cpu().expand_as(diff).flatten()[worst].item():.3e}")
