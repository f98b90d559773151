"""lorm.merge: optimality, equality with the pinv closed forms, invariances."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bounds import assert_pinv_solution, gamma, normwise_difference, solve_eta
from lorm import merge
from merge_problems import F64, pinv_merge, problems, regularized_matrix

ALPHAS = st.sampled_from([0.0, 0.3, 0.5, 1.0])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def objective(m: torch.Tensor, ms: list[torch.Tensor], qs: list[torch.Tensor]) -> torch.Tensor:
    """sum_i tr((M - M_i) Q_i (M - M_i).T): the merge objective with Q_i = Gt_i or H_i."""
    return sum(torch.trace((m - mi) @ q @ (m - mi).T) for mi, q in zip(ms, qs))


def objective_error_bound(m: torch.Tensor, ms: list[torch.Tensor], qs: list[torch.Tensor]) -> float:
    """Rounding bound of objective(m): each trace term sums 2d + 1 products of |M - M_i|,
    |Q_i|, |M - M_i| (eq. 3.13), then N terms are added: gamma(2d + N + 1) times the
    same expression in absolute values."""
    magnitude = sum(torch.trace((m - mi).abs() @ q.abs() @ (m - mi).abs().T) for mi, q in zip(ms, qs))
    return gamma(2 * m.shape[-1] + len(qs) + 1, F64) * float(magnitude)


def check_optimal(m: torch.Tensor, ms: list[torch.Tensor], qs: list[torch.Tensor]) -> None:
    """m minimises the objective: it is the pinv solution of its normal equations
    m sum(Q_i) = sum(M_i Q_i) (residual and range, bounds.assert_pinv_solution), and no
    perturbation lowers the objective by more than the two evaluations' rounding."""
    p_scale = sum(((mi.abs() @ q.abs()).norm() for mi, q in zip(ms, qs)), torch.tensor(0.0)).item()
    assert_pinv_solution(m, sum(qs), sum(mi @ q for mi, q in zip(ms, qs)), terms=len(qs), p_scale=p_scale)
    best = objective(m, ms, qs).item()
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        e = torch.randn(m.shape, dtype=F64, generator=gen) * 1e-3
        slack = objective_error_bound(m, ms, qs) + objective_error_bound(m + e, ms, qs)
        assert objective(m + e, ms, qs).item() >= best - slack


def merge_bound(q: torch.Tensor, terms: int, spread: float = 1.0, products: int = 0) -> float:
    """Normwise relative forward bound of a merge whose q and p are sums of `terms`
    client terms (Higham 7.2: kappa times the relative backward errors): the solve's
    eta = solve_eta(d), the q sum's terms d gamma(d + terms) (as in
    bounds.assert_pinv_solution), p's gamma(d + terms) times `spread` = sum ||M_i Q_i|| /
    ||sum M_i Q_i|| (cancellation among clients), and `products` further d-long products
    inside q (H = A Q A^T: 2). Infinite when q is singular or kappa e >= 1."""
    d = q.shape[-1]
    eigenvalues = torch.linalg.eigvalsh(q.double())
    if eigenvalues[0] <= 0:
        return float("inf")
    kappa = (eigenvalues[-1] / eigenvalues[0]).item()
    g = gamma(d + terms, F64)
    e_q = solve_eta(d) + terms * d * g + products * d * gamma(d, F64)
    k_e = kappa * e_q
    return (k_e + kappa * g * spread) / (1 - k_e) if k_e < 1 else float("inf")


def assert_agrees_with_pinv(m: torch.Tensor, expected: torch.Tensor, ms: list[torch.Tensor],
                            qs: list[torch.Tensor]) -> None:
    """Where q = sum(qs) is regular enough for a forward bound, m and another solution of
    the same merge (each within merge_bound of the exact one) are within twice it."""
    ps = [mi @ q for mi, q in zip(ms, qs)]
    total = sum(ps).norm().item()
    spread = sum(pi.norm().item() for pi in ps) / total if total > 0 else float("inf")
    bound = merge_bound(sum(qs), len(qs), spread)
    if bound < 1:
        assert normwise_difference(m, expected) <= 2 * bound / (1 - bound)


@given(problems())
def test_a_step_is_optimal_and_equals_pinv(pb):
    a = merge.merge_a_step(pb.As, pb.grams, pb.alpha, dtype=F64)
    qs = [regularized_matrix(g, pb.alpha) for g in pb.grams]
    check_optimal(a, pb.As, qs)
    assert_agrees_with_pinv(a, pinv_merge([ai @ q for ai, q in zip(pb.As, qs)], qs), pb.As, qs)


@given(problems())
def test_b_step_is_optimal_and_equals_pinv(pb):
    b = merge.merge_b_step(pb.Bs, pb.A, pb.grams, pb.alpha, dtype=F64)
    hs = [pb.A @ regularized_matrix(g, pb.alpha) @ pb.A.T for g in pb.grams]
    check_optimal(b, pb.Bs, hs)
    assert_agrees_with_pinv(b, pinv_merge([bi @ h for bi, h in zip(pb.Bs, hs)], hs), pb.Bs, hs)


@given(problems())
def test_b_step_minimises_the_layer_output_error(pb):
    """The B-step objective is the paper's: sum_i ||X_i (B A).T - X_i (B_i A).T||^2 (alpha = 1)."""
    b = merge.merge_b_step(pb.Bs, pb.A, pb.grams, 1.0, dtype=F64)

    def output_error(bm):
        return sum(((x @ (bm @ pb.A).T - x @ (bi @ pb.A).T) ** 2).sum() for x, bi in zip(pb.xs, pb.Bs))

    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        e = torch.randn(b.shape, dtype=F64, generator=gen) * 1e-2
        assert output_error(b + e) >= output_error(b) - 1e-9 * max(1.0, output_error(b).item())


@given(problems())
def test_full_regmean_equals_pinv(pb):
    w = merge.merge_full(pb.Ws, pb.grams, pb.alpha, dtype=F64)
    qs = [regularized_matrix(g, pb.alpha) for g in pb.grams]
    check_optimal(w, pb.Ws, qs)
    assert_agrees_with_pinv(w, pinv_merge([wi @ q for wi, q in zip(pb.Ws, qs)], qs), pb.Ws, qs)


@given(problems(), st.randoms(use_true_random=False))
def test_client_order_does_not_matter(pb, rnd):
    order = list(range(len(pb.As)))
    rnd.shuffle(order)
    a1 = merge.merge_a_step(pb.As, pb.grams, pb.alpha, dtype=F64)
    a2 = merge.merge_a_step([pb.As[i] for i in order], [pb.grams[i] for i in order], pb.alpha,
                            dtype=F64)
    # the same sums in another order: both are the pinv solution (check_optimal), and
    # where a forward bound exists they agree to within twice it
    qs = [regularized_matrix(g, pb.alpha) for g in pb.grams]
    check_optimal(a1, pb.As, qs)
    check_optimal(a2, pb.As, qs)
    assert_agrees_with_pinv(a1, a2, pb.As, qs)


@given(st.integers(1, 10), st.integers(1, 4), ALPHAS, st.integers(0, 1000))
def test_identical_clients_return_that_client(d, clients, alpha, seed):
    gen = torch.Generator().manual_seed(seed)
    r = min(2, d)  # H = A G A.T is full rank only for r <= d
    x = torch.randn(3 * d, d, dtype=F64, generator=gen)  # full rank
    a = torch.randn(r, d, dtype=F64, generator=gen)
    b = torch.randn(3, r, dtype=F64, generator=gen)
    shared_a = torch.randn(r, d, dtype=F64, generator=gen)
    # q = clients Q is regular, so the merge is a up to merge_bound (no cancellation
    # among identical clients: spread 1)
    q = clients * regularized_matrix(x.T @ x, alpha)
    merged_a = merge.merge_a_step([a] * clients, [x.T @ x] * clients, alpha, dtype=F64)
    assert normwise_difference(merged_a, a) <= merge_bound(q, clients)
    h = clients * shared_a @ regularized_matrix(x.T @ x, alpha) @ shared_a.T
    merged_b = merge.merge_b_step([b] * clients, shared_a, [x.T @ x] * clients, alpha, dtype=F64)
    assert normwise_difference(merged_b, b) <= merge_bound(h, clients, products=2)


@given(problems(), st.floats(0.0, 1.0))
def test_splitting_a_clients_rows_changes_nothing(pb, where):
    x = pb.xs[0]
    cut = int(where * x.shape[0])
    x1, x2 = x[:cut], x[cut:]
    grams = [x1.T @ x1, x2.T @ x2] + pb.grams[1:]
    split = merge.merge_a_step([pb.As[0]] * 2 + pb.As[1:], grams, pb.alpha, dtype=F64)
    whole = merge.merge_a_step(pb.As, pb.grams, pb.alpha, dtype=F64)
    # split Grams sum to the whole one up to rounding: both merges are the pinv solution
    # of the same problem; forward agreement where a forward bound exists
    qs = [regularized_matrix(g, pb.alpha) for g in pb.grams]
    check_optimal(split, [pb.As[0]] * 2 + pb.As[1:], [regularized_matrix(g, pb.alpha) for g in grams])
    check_optimal(whole, pb.As, qs)
    assert_agrees_with_pinv(split, whole, [pb.As[0]] * 2 + pb.As[1:],
                            [regularized_matrix(g, pb.alpha) for g in grams])


@given(problems())
def test_alpha_zero_is_column_weighted_averaging(pb):
    a = merge.merge_a_step(pb.As, pb.grams, 0.0, dtype=F64)
    weights = torch.stack([torch.diagonal(g) for g in pb.grams])       # (N, d)
    total = weights.sum(0)
    stacked = torch.stack(pb.As)                                        # (N, r, d)
    expected = (stacked * weights[:, None, :]).sum(0) / total
    cutoff = total.numel() * torch.finfo(F64).eps * total.max()
    expected[:, total <= cutoff] = 0.0                                  # pinv: 1/0 -> 0
    # per column a weighted mean: N products and sums, then one division, in both; each
    # within gamma(N + 2) sum_i |A_i| w_i / total of the exact mean
    # (0 in the columns pinv zeroes, where both answers are exactly 0)
    kept = total > cutoff
    magnitude = (stacked.abs() * weights[:, None, :]).sum(0) / torch.where(kept, total, 1.0) * kept
    bound = 2 * gamma(len(pb.As) + 2, F64) * magnitude
    assert ((a - expected).abs() <= bound).all()


@given(problems(), ALPHAS)
def test_equal_grams_give_fedavg(pb, alpha):
    g = pb.grams[0] + torch.eye(pb.grams[0].shape[0], dtype=F64)
    a = merge.merge_a_step(pb.As, [g] * len(pb.As), alpha, dtype=F64)
    # equal Grams: the merge is exactly the mean, computed by a regular solve (merge_bound)
    # and by fedavg (N-term sums: gamma(N) sum ||A_i|| / ||sum A_i|| relative)
    mean = merge.fedavg(pb.As, dtype=F64)
    total = sum(pb.As).norm().item()
    if total > 0:
        fedavg_error = gamma(len(pb.As) + 1, F64) * sum(ai.norm().item() for ai in pb.As) / total
        qs = [regularized_matrix(g, alpha)] * len(pb.As)
        ps = [ai @ q for ai, q in zip(pb.As, qs)]
        spread = sum(pi.norm().item() for pi in ps) / sum(ps).norm().item()
        assert normwise_difference(a, mean) <= merge_bound(sum(qs), len(qs), spread) + fedavg_error


@given(st.integers(1, 4), st.integers(1, 8), st.integers(0, 1000), st.booleans())
def test_cross_task_merge_equals_pinv(tasks, d, seed, diagonal):
    gen = torch.Generator().manual_seed(seed)
    deltas = [torch.randn(3, d, dtype=F64, generator=gen) for _ in range(tasks)]
    xs = [torch.randn(d + 1, d, dtype=F64, generator=gen) for _ in range(tasks)]
    grams = [torch.diagonal(x.T @ x).clone() if diagonal else x.T @ x for x in xs]
    merged = merge.merge_cross_task(deltas, grams, dtype=F64)
    full = [torch.diag(g) if diagonal else g for g in grams]
    expected = pinv_merge([dw @ g for dw, g in zip(deltas, full)], full)
    check_optimal(merged, deltas, full)
    assert_agrees_with_pinv(merged, expected, deltas, full)


def test_regularize_gram():
    g = torch.tensor([[4.0, 2.0], [2.0, 9.0]])
    torch.testing.assert_close(merge.regularize_gram(g, 0.5),
                               torch.tensor([[4.0, 1.0], [1.0, 9.0]], dtype=F64))
    torch.testing.assert_close(merge.regularize_gram(g, 0.0), torch.tensor([4.0, 9.0], dtype=F64))
    with pytest.raises(ValueError, match="alpha must be in"):
        merge.regularize_gram(g, 1.5)
    with pytest.raises(ValueError, match="needs the full"):
        merge.regularize_gram(torch.tensor([4.0, 9.0]), 0.5)


def test_lowrank_h_equals_projected_gram():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 10, dtype=F64, generator=gen)
    a = torch.randn(3, 10, dtype=F64, generator=gen)
    z = x @ a.T
    for alpha in (0.0, 0.4, 1.0):
        h = merge.lowrank_h(a, z.T @ z, (x * x).sum(0), alpha)
        torch.testing.assert_close(h, merge.project_gram(a, merge.regularize_gram(x.T @ x, alpha)))


def test_fedavg_baselines():
    a1, a2 = torch.ones(2, 3), 3 * torch.ones(2, 3)
    torch.testing.assert_close(merge.fedavg([a1, a2], [1, 3]), 2.5 * torch.ones(2, 3))
    avg_a, avg_b = merge.fedavg_lora([a1, a2], [a2, a1])
    torch.testing.assert_close(avg_a, 2 * torch.ones(2, 3))
    torch.testing.assert_close(avg_b, 2 * torch.ones(2, 3))
    with pytest.raises(ValueError, match="one entry per client"):
        merge.merge_a_step([a1], [], 0.5)
    with pytest.raises(ValueError, match="non-negative"):
        merge.fedavg([a1, a2], [-1, 1])
