"""The self-check of the compiled kernels (lorm_ext/self_check.py), tested on the CPU: the
CPU kernels must pass it, and a deliberately wrong kernel, registered for the CPU
through torch.library over the real one, must be caught, warned about once and replaced
by the reference (or raise in strict mode, or run unchecked with the check off). A Guard
for "cpu" stands in for the CUDA one, so the same code path runs as on a GPU."""

import contextlib
import subprocess
import sys
import threading
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch

import lorm_ext
import bounds
from lorm_ext import _check_cases, self_check as S
from lorm_ext import reference as R
from lorm_ext.errors import SelfCheckError, SelfCheckWarning

pytestmark = pytest.mark.skipif(lorm_ext.backend() == "reference",
                                reason="the extension is not built")

CASES_PER_OP = Counter(case.op for case in _check_cases.CASES)


def compiled(device_ops=S.OPS):
    return {op: getattr(torch.ops.lorm_ext, op) for op in device_ops}


@contextlib.contextmanager
def wrong_kernel(op: str, fn, key: str = "CPU"):
    """Registers fn as lorm_ext::op's kernel for dispatch key `key` (over the real one)
    for the duration; the real kernel is back afterwards."""
    lib = torch.library.Library("lorm_ext", "IMPL")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
            lib.impl(op, fn, key)
        yield
    finally:
        lib._destroy()


def gram_plus_1e3(acc, x):
    """gram_update, then 1e-3 added to every entry: wrong by far more than its bound."""
    R.gram_update(acc, x)
    acc.add_(1e-3)


def raises(*args):
    raise RuntimeError("boom")


@pytest.fixture
def guard(monkeypatch):
    """A Guard for CPU tensors in place of the CUDA one, over the CPU kernels (counting
    how often the check asked for them), with LORM_CUDA_CHECK unset."""
    monkeypatch.delenv(S.ENV, raising=False)
    asked = Counter()

    def kernels():
        asked["kernels"] += 1
        return compiled()

    g = S.Guard("cpu", kernels)
    g.asked = asked
    monkeypatch.setattr(S, "GUARD", g)
    return g


def sample(seed=0, d=8):
    gen = torch.Generator().manual_seed(seed)
    return torch.zeros(d, d), torch.randn(6, d, generator=gen)


def test_cpu_kernels_pass_every_case_and_leave_the_global_rng_alone():
    rng = torch.get_rng_state()
    findings = S.self_check("cpu", compiled())
    assert torch.equal(torch.get_rng_state(), rng)
    assert [f.op for f in findings] == [c.op for c in _check_cases.CASES]
    assert set(CASES_PER_OP) == set(S.OPS)
    failed = [f.describe() for f in findings if not f.passed]
    assert not failed, failed
    # a bound that holds with room, not by accident: each error at most half its bound
    assert all(f.error <= f.bound / 2 for f in findings), [f.describe() for f in findings]


def test_the_check_is_deterministic():
    first = [(f.error, f.bound) for f in S.self_check("cpu", compiled())]
    assert first == [(f.error, f.bound) for f in S.self_check("cpu", compiled())]


def test_bounds_are_the_tests_bounds():
    for n in (1, 35, 1000):
        for dtype in (torch.float32, torch.float64):
            assert _check_cases.gamma(n, dtype) == bounds.gamma(n, dtype)


def test_tf32_widens_only_the_float32_cuda_bounds(monkeypatch):
    """With TF32 on, float32 products on CUDA carry TF32's input rounding; nothing else does."""
    cuda = torch.device("cuda")
    assert _check_cases.product_error(cuda, torch.float32) == 0.0  # torch's default: full float32
    monkeypatch.setattr(_check_cases, "_cuda_fp32_matmul_precision", lambda: "tf32")
    assert _check_cases.product_error(cuda, torch.float32) == (1 + 2.0**-11) ** 2 - 1
    assert _check_cases.product_error(cuda, torch.float64) == 0.0
    assert _check_cases.product_error(torch.device("cpu"), torch.float32) == 0.0


def test_cases_plant_what_they_claim():
    """The add_terms cases give one accepted and one negative-curvature update, the
    inspect_terms fault case finds the NaN/Inf, the asymmetry and the negative minimum."""
    seen = {}

    def recording(op):
        def call(*args):
            out = getattr(torch.ops.lorm_ext, op)(*args)
            seen.setdefault(op, []).append(out.clone())
            return out
        return call

    S.self_check("cpu", {op: recording(op) for op in ("add_terms", "inspect_terms")})
    accepted, rejected = seen["add_terms"]
    assert accepted[:, 4].tolist() == [R.ACCEPTED] * 3
    assert rejected[:, 4].tolist() == [R.NEGATIVE_CURVATURE, R.ACCEPTED, R.ACCEPTED]
    clean, faulty = seen["inspect_terms"]
    assert clean[:, 1:3].tolist() == [[1, 1]] * 4
    assert faulty[:, 1].tolist() == [1, 0, 1, 0] and faulty[:, 2].tolist() == [0, 1, 1, 1]
    assert faulty[2, 3] == -3


def test_a_wrong_gram_kernel_fails_its_cases_and_only_those():
    with wrong_kernel("gram_update", gram_plus_1e3):
        findings = S.self_check("cpu", compiled())
    failed = [f for f in findings if not f.passed]
    assert [f.op for f in failed] == ["gram_update"] * CASES_PER_OP["gram_update"]
    assert all(f.error >= 0.99e-3 > f.bound for f in failed)


def test_a_float32_solve_fails_the_float64_bound():
    """The solve bounds tell float32 accuracy from float64."""
    def float32_solve(q, p, mixed_min_dim=1024):
        return R.spd_solve(q.float(), p.float()).double()

    findings = S.self_check("cpu", {"spd_solve": float32_solve})
    dense = [f for f in findings if "Cholesky" in f.case]
    assert len(dense) == 2 and not any(f.passed for f in dense)


def test_every_op_is_checked_by_a_failing_kernel():
    """Each op's cases catch a kernel that leaves its outputs off (or raises)."""
    def offset_lowrank(acc, x, a, diag_acc):
        R.lowrank_gram_update(acc, x, a, diag_acc)
        acc.add_(1e-2)

    def offset_solve(q, p, mixed_min_dim=1024):
        return R.spd_solve(q, p) * (1 + 1e-6)

    def inspect_no_symmetry(ts, symmetric):
        return R.inspect_terms(ts, [0] * len(ts))

    def add_always(sums, ts, kinds, limits, negative_rtol, probes):
        return R.add_terms(sums, ts, kinds, [1e300] * len(ts), 1e300, probes)

    wrong = {"gram_update": gram_plus_1e3, "lowrank_gram_update": offset_lowrank,
             "spd_solve": offset_solve, "inspect_terms": inspect_no_symmetry, "add_terms": add_always}
    for op, fn in wrong.items():
        findings = S.self_check("cpu", {op: fn})
        assert any(not f.passed for f in findings), (op, [f.describe() for f in findings])
    findings = S.self_check("cpu", {op: raises for op in S.OPS})
    assert all(f.raised == "RuntimeError: boom" and not f.passed for f in findings)


def test_reference_passes_against_itself():
    """Zero difference wherever the reference is compared with itself; the rank-deficient
    solve is measured by its residual instead (not zero, within its bound)."""
    findings = S.self_check("cpu", S.REFERENCE)
    assert all(f.passed for f in findings), [f.describe() for f in findings]
    assert all(f.error == 0 for f in findings if "pinv" not in f.case), [f.describe() for f in findings]


# -- the guard, end to end through the public ops ---------------------------------------

def test_wrong_kernel_warns_once_and_the_reference_runs_afterwards(guard):
    acc, x = sample()
    with wrong_kernel("gram_update", gram_plus_1e3):
        with pytest.warns(SelfCheckWarning) as record:
            lorm_ext.gram_update(acc, x)
            second = torch.zeros(8, 8)
            lorm_ext.gram_update(second, x)  # no second check, no second warning
            x2 = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
            lorm_ext.gram_update(second, x2)
        with warnings.catch_warnings():
            warnings.simplefilter("error", SelfCheckWarning)
            diag = torch.zeros(8)
            lorm_ext.gram_update(diag, x)
    assert len([w for w in record if issubclass(w.category, SelfCheckWarning)]) == 1
    message = str(record[0].message)
    assert record[0].filename == __file__  # points at the op's caller
    assert "failed for gram_update:" in message and "exceeds its bound" in message
    assert "spd_solve" not in message.split(":")[0]
    assert guard.runs == 1 and guard.asked["kernels"] == 1
    assert guard.failed == {"gram_update"}
    # the results are the reference's, bit for bit (the wrong kernel would be 1e-3 off)
    expected, expected_second, expected_diag = torch.zeros(8, 8), torch.zeros(8, 8), torch.zeros(8)
    R.gram_update(expected, x)
    R.gram_update(expected_second, x)
    R.gram_update(expected_second, x2)
    R.gram_update(expected_diag, x)
    assert torch.equal(acc, expected) and torch.equal(second, expected_second)
    assert torch.equal(diag, expected_diag)
    # the ops that passed keep their kernels
    assert S.kernel("spd_solve", x) is torch.ops.lorm_ext.spd_solve
    assert S.kernel("gram_update", x) is R.gram_update
    assert "FAILED on cpu for gram_update" in guard.outcome()


def test_a_raising_kernel_falls_back_too(guard):
    gen = torch.Generator().manual_seed(2)
    g = torch.randn(20, 6, dtype=torch.float64, generator=gen)
    q, p = g.T @ g, torch.randn(3, 6, dtype=torch.float64, generator=gen)
    with wrong_kernel("spd_solve", raises):
        with pytest.warns(SelfCheckWarning, match="spd_solve .*the kernel raised RuntimeError: boom"):
            out = lorm_ext.spd_solve(q, p)
    assert torch.equal(out, R.spd_solve(q, p))
    assert guard.failed == {"spd_solve"}


def test_strict_raises_naming_the_op(guard, monkeypatch):
    monkeypatch.setenv(S.ENV, "strict")
    acc, x = sample()
    with wrong_kernel("gram_update", gram_plus_1e3):
        with warnings.catch_warnings():
            warnings.simplefilter("error", SelfCheckWarning)  # strict never warns
            with pytest.raises(SelfCheckError, match="failed .*strict.*gram_update"):
                lorm_ext.gram_update(acc, x)
            with pytest.raises(SelfCheckError, match="^gram_update: its cpu kernel failed"):
                lorm_ext.gram_update(acc, x)
            # the ops that passed run
            q = torch.eye(4, dtype=torch.float64)
            assert torch.equal(lorm_ext.spd_solve(q, torch.ones(2, 4, dtype=torch.float64)),
                               torch.ones(2, 4, dtype=torch.float64))
    assert guard.runs == 1 and "SelfCheckError" in guard.outcome()


def test_off_skips_the_check(guard, monkeypatch):
    monkeypatch.setenv(S.ENV, "off")
    acc, x = sample()
    with wrong_kernel("gram_update", gram_plus_1e3):
        with warnings.catch_warnings():
            warnings.simplefilter("error", SelfCheckWarning)
            lorm_ext.gram_update(acc, x, check_finite=False)
    expected = torch.zeros(8, 8)
    R.gram_update(expected, x)
    assert torch.allclose(acc, expected + 1e-3)  # the wrong kernel ran, unchecked
    assert guard.runs == 0 and guard.asked["kernels"] == 0 and guard.findings is None
    assert guard.outcome() == f"skipped ({S.ENV}=off)"


def test_an_unknown_mode_is_refused(guard, monkeypatch):
    monkeypatch.setenv(S.ENV, "yes")
    acc, x = sample()
    with pytest.raises(ValueError, match="LORM_CUDA_CHECK='yes': expected one of on, strict, off"):
        lorm_ext.gram_update(acc, x)
    assert guard.runs == 0 and not guard.done


def test_no_kernels_to_check(monkeypatch):
    """A build without kernels for the guarded device (no CUDA kernels): nothing to
    check, nothing falls back, and the outcome says why."""
    monkeypatch.delenv(S.ENV, raising=False)
    guard = S.Guard("cpu", lambda: None, why_none="no kernels here")
    monkeypatch.setattr(S, "GUARD", guard)
    assert guard.outcome() == "does not apply: no kernels here"
    acc, x = sample()
    lorm_ext.gram_update(acc, x)
    assert guard.done and guard.runs == 0 and not guard.failed
    assert guard.outcome() == "does not apply: no kernels here"


def test_one_check_for_many_threads(guard):
    """Threads that arrive while the check runs wait for it: none of them runs the wrong
    kernel, the check runs once and warns once."""
    barrier = threading.Barrier(4)
    results, errors = [], []

    def worker(seed):
        acc, x = sample(seed)
        barrier.wait()
        try:
            lorm_ext.gram_update(acc, x)
            results.append((acc, x))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    with wrong_kernel("gram_update", gram_plus_1e3), warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors and len(results) == 4
    assert guard.runs == 1 and guard.asked["kernels"] == 1 and guard.failed == {"gram_update"}
    assert len([w for w in record if issubclass(w.category, SelfCheckWarning)]) == 1
    for acc, x in results:
        expected = torch.zeros(8, 8)
        R.gram_update(expected, x)
        assert torch.equal(acc, expected)


def test_cpu_ops_never_run_the_cuda_check(monkeypatch):
    """The real guard (CUDA tensors) is not asked anything by CPU calls."""
    asked = Counter()

    def kernels():
        asked["kernels"] += 1
        return compiled()

    cuda_guard = S.Guard("cuda", kernels)
    monkeypatch.setattr(S, "GUARD", cuda_guard)
    acc, x = sample()
    lorm_ext.gram_update(acc, x)
    lorm_ext.lowrank_gram_update(torch.zeros(2, 2), x, torch.randn(2, 8), torch.zeros(8))
    lorm_ext.spd_solve(torch.eye(8, dtype=torch.float64), x.double())
    lorm_ext.inspect_terms([x])
    lorm_ext.add_terms([torch.zeros(6, 8, dtype=torch.float64)], [x], [0], [1e30])
    assert asked["kernels"] == 0 and not cuda_guard.done
    assert cuda_guard.outcome().startswith("not run in this process")


def test_info_reports_the_outcome(guard):
    from lorm_ext import info
    assert info.lines()[-1] == f"CUDA check:    {guard.outcome()}"
    acc, x = sample()
    with wrong_kernel("gram_update", gram_plus_1e3), pytest.warns(SelfCheckWarning):
        lorm_ext.gram_update(acc, x)
    assert info.lines()[-1].startswith("CUDA check:    FAILED on cpu for gram_update")


def test_info_self_check_says_why_it_cannot_run_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: test_cuda_self_check covers --self-check")
    result = subprocess.run([sys.executable, "-m", "lorm_ext.info", "--self-check"], capture_output=True,
                            text=True, timeout=120, cwd=Path(lorm_ext.__file__).parents[1])
    assert result.returncode == 0, result.stderr
    reason = "no CUDA kernels loaded" if lorm_ext.backend() != "cuda" else "no GPU visible"
    assert f"CUDA check:    cannot run here: {reason}" in result.stdout


# -- on a GPU: the real CUDA kernels --------------------------------------------------

@pytest.mark.cuda
def test_cuda_kernels_pass_the_self_check():
    state = torch.cuda.get_rng_state()
    findings = S.self_check("cuda", compiled())
    assert torch.equal(torch.cuda.get_rng_state(), state)
    failed = [f.describe() for f in findings if not f.passed]
    assert len(findings) == len(_check_cases.CASES) and not failed, failed


@pytest.mark.cuda
def test_cuda_guard_passes_and_keeps_the_kernels(monkeypatch):
    monkeypatch.delenv(S.ENV, raising=False)
    guard = S.Guard("cuda", S._cuda_kernels)
    monkeypatch.setattr(S, "GUARD", guard)
    acc, x = (t.cuda() for t in sample())
    with warnings.catch_warnings():
        warnings.simplefilter("error", SelfCheckWarning)
        lorm_ext.gram_update(acc, x)
    assert guard.runs == 1 and not guard.failed and guard.outcome().startswith("passed on cuda:")
    assert S.kernel("gram_update", x) is torch.ops.lorm_ext.gram_update


@pytest.mark.cuda
def test_cuda_fallback_runs_the_reference_on_the_gpu(monkeypatch):
    """Every CUDA kernel replaced by one that raises: each op then runs the reference on
    CUDA tensors (never run anywhere else) and matches it on the CPU."""
    monkeypatch.delenv(S.ENV, raising=False)
    guard = S.Guard("cuda", S._cuda_kernels)
    monkeypatch.setattr(S, "GUARD", guard)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 8, generator=gen)
    a = torch.randn(2, 8, generator=gen)
    g = torch.randn(20, 8, dtype=torch.float64, generator=gen)
    q = g.T @ g
    q = (q + q.T) / 2  # exactly symmetric (BLAS need not give that)
    with contextlib.ExitStack() as stack:
        for op in S.OPS:
            stack.enter_context(wrong_kernel(op, raises, key="CUDA"))
        with pytest.warns(SelfCheckWarning):
            acc = torch.zeros(8, 8, device="cuda")
            lorm_ext.gram_update(acc, x.cuda())
        low, diag = torch.zeros(2, 2, device="cuda"), torch.zeros(8, device="cuda")
        lorm_ext.lowrank_gram_update(low, x.cuda(), a.cuda(), diag)
        solved = lorm_ext.spd_solve(q.cuda(), x.double().cuda())
        found = lorm_ext.inspect_terms([q.cuda(), x.cuda()], [True, False])
        sums = [torch.zeros(8, 8, dtype=torch.float64, device="cuda")]
        verdicts = lorm_ext.add_terms(sums, [q.float().cuda()], [2], [1e30], R.NEGATIVE_RTOL,
                                      [torch.randn(4, 8, generator=gen).cuda()])
    assert guard.failed == set(S.OPS)
    ref_acc, ref_low, ref_diag = torch.zeros(8, 8), torch.zeros(2, 2), torch.zeros(8)
    R.gram_update(ref_acc, x)
    R.lowrank_gram_update(ref_low, x, a, ref_diag)
    torch.testing.assert_close(acc.cpu(), ref_acc)
    torch.testing.assert_close(low.cpu(), ref_low)
    torch.testing.assert_close(diag.cpu(), ref_diag)
    torch.testing.assert_close(solved.cpu(), R.spd_solve(q, x.double()))
    assert found == [tuple(r[:1]) + (True, True, r[3]) for r in R.inspect_terms([q, x], [1, 0]).tolist()]
    assert verdicts[0, 4] == R.ACCEPTED and torch.equal(sums[0].cpu(), q.float().double())


@pytest.mark.cuda
def test_info_self_check_runs_it_on_the_gpu():
    result = subprocess.run([sys.executable, "-m", "lorm_ext.info", "--self-check"], capture_output=True,
                            text=True, timeout=300, cwd=Path(lorm_ext.__file__).parents[1])
    assert result.returncode == 0, result.stderr
    assert "CUDA check:    passed on cuda:" in result.stdout, result.stdout
