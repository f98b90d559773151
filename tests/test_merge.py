"""lorm.merge: optimality, equality with the pinv closed forms, invariances."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lorm import merge
from merge_problems import F64, pinv_merge, problems, regularized_matrix

ALPHAS = st.sampled_from([0.0, 0.3, 0.5, 1.0])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def objective(m: torch.Tensor, ms: list[torch.Tensor], qs: list[torch.Tensor]) -> torch.Tensor:
    """sum_i tr((M - M_i) Q_i (M - M_i).T): the merge objective with Q_i = Gt_i or H_i."""
    return sum(torch.trace((m - mi) @ q @ (m - mi).T) for mi, q in zip(ms, qs))


def check_optimal(m: torch.Tensor, ms: list[torch.Tensor], qs: list[torch.Tensor]) -> None:
    q_sum = sum(qs)
    p_sum = sum(mi @ q for mi, q in zip(ms, qs))
    gradient = 2 * (m @ q_sum - p_sum)
    scale = (p_sum.norm() + m.norm() * q_sum.norm()).item() + 1e-12
    assert gradient.norm().item() <= 1e-8 * scale
    best = objective(m, ms, qs).item()
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        e = torch.randn(m.shape, dtype=F64, generator=gen) * 1e-3
        assert objective(m + e, ms, qs).item() >= best - 1e-9 * max(1.0, abs(best))


@given(problems())
def test_a_step_is_optimal_and_equals_pinv(pb):
    a = merge.merge_a_step(pb.As, pb.grams, pb.alpha, dtype=F64)
    qs = [regularized_matrix(g, pb.alpha) for g in pb.grams]
    check_optimal(a, pb.As, qs)
    expected = pinv_merge([ai @ q for ai, q in zip(pb.As, qs)], qs)
    assert rel(a, expected) < 1e-7 or (a - expected).abs().max() < 1e-9


@given(problems())
def test_b_step_is_optimal_and_equals_pinv(pb):
    b = merge.merge_b_step(pb.Bs, pb.A, pb.grams, pb.alpha, dtype=F64)
    hs = [pb.A @ regularized_matrix(g, pb.alpha) @ pb.A.T for g in pb.grams]
    check_optimal(b, pb.Bs, hs)
    expected = pinv_merge([bi @ h for bi, h in zip(pb.Bs, hs)], hs)
    assert rel(b, expected) < 1e-7 or (b - expected).abs().max() < 1e-9


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
    expected = pinv_merge([wi @ q for wi, q in zip(pb.Ws, qs)], qs)
    assert rel(w, expected) < 1e-7 or (w - expected).abs().max() < 1e-9


@given(problems(), st.randoms(use_true_random=False))
def test_client_order_does_not_matter(pb, rnd):
    order = list(range(len(pb.As)))
    rnd.shuffle(order)
    a1 = merge.merge_a_step(pb.As, pb.grams, pb.alpha, dtype=F64)
    a2 = merge.merge_a_step([pb.As[i] for i in order], [pb.grams[i] for i in order], pb.alpha,
                            dtype=F64)
    torch.testing.assert_close(a1, a2, rtol=1e-9, atol=1e-9)


@given(st.integers(1, 10), st.integers(1, 4), ALPHAS, st.integers(0, 1000))
def test_identical_clients_return_that_client(d, clients, alpha, seed):
    gen = torch.Generator().manual_seed(seed)
    r = min(2, d)  # H = A G A.T is full rank only for r <= d
    x = torch.randn(3 * d, d, dtype=F64, generator=gen)  # full rank
    a = torch.randn(r, d, dtype=F64, generator=gen)
    b = torch.randn(3, r, dtype=F64, generator=gen)
    shared_a = torch.randn(r, d, dtype=F64, generator=gen)
    torch.testing.assert_close(merge.merge_a_step([a] * clients, [x.T @ x] * clients, alpha,
                                                  dtype=F64), a, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(merge.merge_b_step([b] * clients, shared_a, [x.T @ x] * clients,
                                                  alpha, dtype=F64), b, rtol=1e-7, atol=1e-7)


@given(problems(), st.floats(0.0, 1.0))
def test_splitting_a_clients_rows_changes_nothing(pb, where):
    x = pb.xs[0]
    cut = int(where * x.shape[0])
    x1, x2 = x[:cut], x[cut:]
    grams = [x1.T @ x1, x2.T @ x2] + pb.grams[1:]
    split = merge.merge_a_step([pb.As[0]] * 2 + pb.As[1:], grams, pb.alpha, dtype=F64)
    whole = merge.merge_a_step(pb.As, pb.grams, pb.alpha, dtype=F64)
    torch.testing.assert_close(split, whole, rtol=1e-7, atol=1e-9)


@given(problems())
def test_alpha_zero_is_column_weighted_averaging(pb):
    a = merge.merge_a_step(pb.As, pb.grams, 0.0, dtype=F64)
    weights = torch.stack([torch.diagonal(g) for g in pb.grams])       # (N, d)
    total = weights.sum(0)
    stacked = torch.stack(pb.As)                                        # (N, r, d)
    expected = (stacked * weights[:, None, :]).sum(0) / total
    cutoff = total.numel() * torch.finfo(F64).eps * total.max()
    expected[:, total <= cutoff] = 0.0                                  # pinv: 1/0 -> 0
    torch.testing.assert_close(a, expected, rtol=1e-10, atol=1e-10)


@given(problems(), ALPHAS)
def test_equal_grams_give_fedavg(pb, alpha):
    g = pb.grams[0] + torch.eye(pb.grams[0].shape[0], dtype=F64)
    a = merge.merge_a_step(pb.As, [g] * len(pb.As), alpha, dtype=F64)
    torch.testing.assert_close(a, merge.fedavg(pb.As, dtype=F64), rtol=1e-8, atol=1e-8)


@given(st.integers(1, 4), st.integers(1, 8), st.integers(0, 1000), st.booleans())
def test_cross_task_merge_equals_pinv(tasks, d, seed, diagonal):
    gen = torch.Generator().manual_seed(seed)
    deltas = [torch.randn(3, d, dtype=F64, generator=gen) for _ in range(tasks)]
    xs = [torch.randn(d + 1, d, dtype=F64, generator=gen) for _ in range(tasks)]
    grams = [torch.diagonal(x.T @ x).clone() if diagonal else x.T @ x for x in xs]
    merged = merge.merge_cross_task(deltas, grams, dtype=F64)
    full = [torch.diag(g) if diagonal else g for g in grams]
    expected = pinv_merge([dw @ g for dw, g in zip(deltas, full)], full)
    torch.testing.assert_close(merged, expected, rtol=1e-8, atol=1e-8)


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
