"""ClientUpdate and Aggregator: the streaming path equals lorm.merge, rejects bad
updates without touching the sums, and sends the bytes the math predicts."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bounds import assert_bound_tells_float32_apart, normwise_difference, spd_solve_bound
from lorm import Aggregator, ClientUpdate, CrossTaskMerger, SolveStats, UpdateRejected, merge
from merge_problems import F64, make_problem, problems, regularized_matrix
from test_merge import assert_agrees_with_pinv, check_optimal, objective

LAYERS = ("blocks.0.attn.qkv", "blocks.0.mlp.fc2")


def a_step_update(pb, i, task=0, round=1, head=True):
    """Client i's A-step update for two layers sharing the problem's statistics."""
    stats = merge.a_step_stats(pb.As[i], pb.grams[i], pb.alpha)
    update = ClientUpdate(task=task, round=round, factor="A", num_samples=i + 1,
                          layers={name: stats for name in LAYERS})
    if head:
        update.head = merge.full_stats(pb.Ws[i], pb.grams[i], 0.5)
        update.head_bias = torch.full((pb.Ws[i].shape[0],), float(i), dtype=F64)
    return update


def b_step_update(pb, i):
    h = merge.project_gram(pb.A, merge.regularize_gram(pb.grams[i], pb.alpha))
    stats = merge.b_step_stats(pb.Bs[i], h)
    return ClientUpdate(task=0, round=0, factor="B", num_samples=1,
                        layers={name: stats for name in LAYERS})


@given(problems(), st.sampled_from([None, torch.float64, torch.float32]))
def test_streaming_equals_list_functions(pb, wire):
    agg = Aggregator(task=0, round=1, factor="A", dtype=F64)
    for i in range(len(pb.As)):
        update = a_step_update(pb, i)
        if wire is not None:  # through the bytes a client really sends
            update = ClientUpdate.from_bytes(update.to_bytes(wire))
        agg.add(update)
    out = agg.result()
    expected_a = merge.merge_a_step(pb.As, pb.grams, pb.alpha, dtype=F64)
    expected_w = merge.merge_full(pb.Ws, pb.grams, 0.5, dtype=F64)
    if wire == torch.float32:
        # float32 transport perturbs a singular q into a barely regular one, which can move
        # the minimiser along q's near-null space; the objective value is what survives.
        qs = [regularized_matrix(g, pb.alpha) for g in pb.grams]
        for name in LAYERS:
            assert objective(out.layers[name], pb.As, qs) <= objective(expected_a, pb.As, qs) \
                + 1e-4 * (1 + objective(expected_a, pb.As, qs))
    else:  # the same sums in another order: both are the pinv solution (test_merge's bounds)
        qs = [regularized_matrix(g, pb.alpha) for g in pb.grams]
        for name in LAYERS:
            check_optimal(out.layers[name], pb.As, qs)
            assert_agrees_with_pinv(out.layers[name], expected_a, pb.As, qs)
        head_qs = [regularized_matrix(g, 0.5) for g in pb.grams]
        check_optimal(out.head_weight, pb.Ws, head_qs)
        assert_agrees_with_pinv(out.head_weight, expected_w, pb.Ws, head_qs)
    counts = torch.arange(1, len(pb.As) + 1, dtype=F64)
    expected_bias = (counts * torch.arange(len(pb.As), dtype=F64)).sum() / counts.sum()
    torch.testing.assert_close(out.head_bias, expected_bias.expand_as(out.head_bias))
    assert out.num_clients == len(pb.As) and out.num_samples == int(counts.sum())


@given(problems())
def test_streaming_b_step_equals_merge_b_step(pb):
    agg = Aggregator(task=0, round=0, factor="B", dtype=F64)
    for i in range(len(pb.Bs)):
        agg.add(b_step_update(pb, i))
    expected = merge.merge_b_step(pb.Bs, pb.A, pb.grams, pb.alpha, dtype=F64)
    hs = [pb.A @ regularized_matrix(g, pb.alpha) @ pb.A.T for g in pb.grams]
    for name in LAYERS:
        check_optimal(agg.result().layers[name], pb.Bs, hs)
        assert_agrees_with_pinv(agg.result().layers[name], expected, pb.Bs, hs)


def corrupt(update, how):
    stats = update.layers[LAYERS[0]]
    if how == "round":
        update.round = 7
    elif how == "task":
        update.task = 3
    elif how == "factor":
        update.factor = "B"
    elif how == "missing layer":
        del update.layers[LAYERS[1]]
    elif how == "extra layer":
        update.layers["blocks.9.mlp.fc1"] = stats
    elif how == "shape":
        update.layers[LAYERS[0]] = SolveStats(p=torch.zeros(stats.p.shape[0], stats.p.shape[1] + 1),
                                              q=torch.ones(stats.p.shape[1] + 1))
    elif how == "NaN":
        p = stats.p.clone()
        p.view(-1)[0] = float("nan")
        update.layers[LAYERS[0]] = SolveStats(p=p, q=stats.q)
    elif how == "non-symmetric":
        q = torch.eye(stats.p.shape[1], dtype=F64)
        if q.shape[0] > 1:
            q[0, 1] = 5.0
        else:
            q = q.expand(1, 2)
        update.layers[LAYERS[0]] = SolveStats(p=stats.p, q=q)
    elif how == "negative diagonal":  # shaped like the Grams it joins
        q = -torch.ones(stats.p.shape[1], dtype=F64)
        q = torch.diag(q) if stats.q.dim() == 2 else q
        update.layers[LAYERS[0]] = SolveStats(p=stats.p, q=q)
    elif how == "no head":
        update.head, update.head_bias = None, None
    elif how == "zero samples":
        update.num_samples = 0
    elif how == "missing p":
        update.layers[LAYERS[0]] = SolveStats(p=None, q=stats.q)
    elif how == "integer bias":  # the same shape as before: only the dtype is wrong
        update.head_bias = update.head_bias.round().to(torch.int64)
    elif how == "meta tensor":
        update.layers[LAYERS[0]] = SolveStats(p=stats.p.to("meta"), q=stats.q)
    elif how == "not SolveStats":  # the right tensors in the wrong container
        update.layers[LAYERS[0]] = type("Duck", (), {"p": stats.p, "q": stats.q})()
    return update


BAD = {"round": "round 7", "task": "task 3", "factor": "factor 'B'",
       "missing layer": "missing", "extra layer": "unexpected", "shape": "shape",
       "NaN": "NaN", "non-symmetric": "symmetric|square", "negative diagonal": "negative diagonal",
       "no head": "head", "zero samples": "num_samples", "missing p": "p is missing",
       "integer bias": "head/bias must be a floating", "meta tensor": "meta",
       "not SolveStats": "expected SolveStats"}


@pytest.mark.parametrize("how", sorted(BAD))
def test_bad_update_is_rejected_and_sums_survive(how):
    pb = make_problem(d=5, o=3, r=2, rows=[4, 9, 12], alpha=0.5, seed=0)
    agg = Aggregator(task=0, round=1, factor="A", dtype=F64)
    for i in range(len(pb.As)):
        agg.add(a_step_update(pb, i))
    before = {k: v.clone() for k, v in agg._sums.items()}
    result_before = agg.result()
    with pytest.raises(UpdateRejected, match=BAD[how]) as info:
        agg.add(corrupt(a_step_update(pb, 0), how))
    assert "unchanged" in str(info.value)
    assert agg.num_clients == len(pb.As)
    assert before.keys() == agg._sums.keys()
    assert all(torch.equal(before[k], agg._sums[k]) for k in before)
    after = agg.result()
    for name in LAYERS:
        assert torch.equal(after.layers[name], result_before.layers[name])
    agg.add(a_step_update(pb, 0))  # a good update after the bad one still goes in
    assert agg.num_clients == len(pb.As) + 1


def test_result_needs_clients_and_gram_only_aggregator_gives_sums():
    with pytest.raises(ValueError, match="no client update"):
        Aggregator(0, 0, "A").result()
    agg = Aggregator(0, 0, "G")
    g = torch.eye(3, dtype=F64)
    for _ in range(2):
        agg.add(ClientUpdate(0, 0, "G", 5, layers={"l": SolveStats(p=None, q=g)}))
    torch.testing.assert_close(agg.sums()["l"].q, 2 * g)
    with pytest.raises(ValueError, match="nothing to solve"):
        agg.result()


def test_cross_task_merger_equals_merge_cross_task():
    gen = torch.Generator().manual_seed(0)
    deltas = [torch.randn(4, 6, dtype=F64, generator=gen) for _ in range(3)]
    grams = [(lambda x: x.T @ x)(torch.randn(9, 6, dtype=F64, generator=gen)) for _ in range(3)]
    merger = CrossTaskMerger()
    for dw, g in zip(deltas, grams):
        merger.add_task({"l": dw}, {"l": g})
    torch.testing.assert_close(merger.merged(F64)["l"], merge.merge_cross_task(deltas, grams, dtype=F64))
    with pytest.raises(ValueError, match="different layers"):
        merger.add_task({"l": deltas[0]}, {"m": grams[0]})
    assert merger.num_tasks == 3


# ViT-B/16: per block qkv (2304 x 768), proj (768 x 768), fc1 (3072 x 768), fc2 (768 x 3072).
VIT_B_LAYERS = {f"blocks.{b}.{name}": shape for b in range(12) for name, shape in
                [("attn.qkv", (2304, 768)), ("attn.proj", (768, 768)),
                 ("mlp.fc1", (3072, 768)), ("mlp.fc2", (768, 3072))]}


def test_b_step_bytes_follow_the_formula():
    r = 8
    b_step = ClientUpdate(0, 0, "B", 1, layers={
        n: SolveStats(p=torch.zeros(o, r), q=torch.eye(r)) for n, (o, d) in VIT_B_LAYERS.items()})
    full = ClientUpdate(0, 0, "full", 1, layers={
        n: SolveStats(p=torch.empty(o, d, device="meta"), q=torch.empty(d, d, device="meta"))
        for n, (o, d) in VIT_B_LAYERS.items()})
    lowrank_numbers = sum(o * r + r * (r + 1) // 2 for o, d in VIT_B_LAYERS.values())
    full_numbers = sum(o * d + d * (d + 1) // 2 for o, d in VIT_B_LAYERS.values())
    assert b_step.payload_nbytes() == 4 * lowrank_numbers
    assert full.payload_nbytes() == 4 * full_numbers
    assert full.payload_nbytes() / b_step.payload_nbytes() == full_numbers / lowrank_numbers
    assert full_numbers / lowrank_numbers > 200  # 229 for ViT-B at r = 8
    data = b_step.to_bytes()
    assert b_step.nbytes() == len(data)
    assert 0 < len(data) - b_step.payload_nbytes() < 16_384  # the header: names and offsets
    back = ClientUpdate.from_bytes(data)
    assert set(back.layers) == set(VIT_B_LAYERS)
    assert torch.equal(back.layers["blocks.3.mlp.fc2"].q, torch.eye(r, dtype=F64))


def test_symmetric_q_travels_as_upper_triangle_and_comes_back_whole():
    x = torch.randn(10, 5, dtype=F64)
    g = merge.symmetric(x.T @ x)
    update = ClientUpdate(1, 2, "A", 3, layers={"l": SolveStats(p=torch.randn(2, 5), q=g),
                                                "diag": SolveStats(p=torch.randn(2, 5),
                                                                   q=torch.diagonal(g).clone())})
    back = ClientUpdate.from_bytes(update.to_bytes(torch.float64))
    assert (back.task, back.round, back.factor, back.num_samples) == (1, 2, "A", 3)
    assert torch.equal(back.layers["l"].q, g)
    assert torch.equal(back.layers["diag"].q, torch.diagonal(g))
    assert update.payload_nbytes(torch.float64) == 8 * (2 * 5 + 15 + 2 * 5 + 5)


def test_from_bytes_rejects_foreign_data():
    with pytest.raises(ValueError, match="not a lorm ClientUpdate"):
        ClientUpdate.from_bytes(b"\x00" * 4)
    from safetensors.torch import save
    with pytest.raises(ValueError, match="magic"):  # a bare safetensors file: no envelope
        ClientUpdate.from_bytes(save({"x": torch.zeros(2)}))


def test_mixed_precision_solve_agrees_with_float64():
    """A-step round at a size the mixed-precision path takes (d >= 1024): the refined
    answer equals the float64 Cholesky's to float64 round-off."""
    gen = torch.Generator().manual_seed(0)
    d, r = 1024, 4
    agg = Aggregator(task=0, round=1, factor="A", dtype=F64)
    for i in range(3):
        x = torch.randn(3 * d, d, dtype=F64, generator=gen)
        stats = merge.a_step_stats(torch.randn(r, d, dtype=F64, generator=gen), x.T @ x, 0.5)
        agg.add(ClientUpdate(task=0, round=1, factor="A", num_samples=1, layers={"l": stats}))
    mixed, exact = agg.result().layers["l"], agg.result(mixed_precision=False).layers["l"]
    assert not torch.equal(mixed, exact)  # the two paths really differ ...
    # ... by round-off only. Each answer is within the normwise bound b of a float64
    # Cholesky solve of the summed q (refinement stops at dsposv's residual test, which is
    # inside that bound), so they differ by at most 2b / (1 - b) of the float64 answer.
    # Elementwise relative tests cannot hold: a small entry carries the error of the norm.
    # It must also sit below float32 accuracy, or a float32 answer left unrefined would pass.
    q = agg.sums()["l"].q
    bound = spd_solve_bound(q)
    assert_bound_tells_float32_apart(q, 2 * bound / (1 - bound))
    assert normwise_difference(mixed, exact) <= 2 * bound / (1 - bound)


@pytest.mark.parametrize("wire", [torch.float32, torch.bfloat16])
def test_wire_dtype_kept_on_arrival_sums_the_same_bits(wire):
    """A server may keep the tensors in the dtype they travelled in (from_bytes with
    dtype=None): adding them converts exactly, so the sums and the merge are bit for bit
    those of the float64 copies."""
    pb = make_problem(d=6, o=3, r=2, rows=[5, 9, 12], alpha=0.5, seed=3)
    kept, widened = (Aggregator(task=0, round=1, factor="A", dtype=F64) for _ in range(2))
    for i in range(len(pb.As)):
        data = a_step_update(pb, i).to_bytes(wire)
        arrived = ClientUpdate.from_bytes(data, dtype=None)
        assert all(t.dtype == wire for t in arrived.tensors().values())
        kept.add(arrived)
        widened.add(ClientUpdate.from_bytes(data))
    assert kept._sums.keys() == widened._sums.keys()
    assert all(torch.equal(kept._sums[k], widened._sums[k]) for k in kept._sums)
    a, b = kept.result(), widened.result()
    assert all(torch.equal(a.layers[n], b.layers[n]) for n in a.layers)
    assert torch.equal(a.head_weight, b.head_weight) and torch.equal(a.head_bias, b.head_bias)
