"""The CPU vector loops are built twice on x86-64 (AVX2 and baseline) and both builds
give bitwise the same results: one process runs each build (LORM_CPU_BASELINE=1 picks
the baseline one) over the same inputs, covering every loop and its scalar edges
(sizes that are not multiples of 8 or 16, NaN and Inf, ranks above 8).

Why exact bits are promised here, and hold on AVX-512 CPUs too: the loops are chosen at
run time between exactly two builds (csrc/cpu/isa.cpp: AVX2 when the CPU has it, so an
AVX-512 CPU runs the AVX2 build; there is no AVX-512 build), `target("avx2")` does not
enable FMA, so no product is fused into a sum, and both builds add the same terms in
the same order. The spd_solve case also calls torch's Cholesky and matmul, whose bits
vary with the CPU's ISA and the BLAS; it matches here because both processes run on
the same CPU with the same BLAS and thread count. Across machines nothing that goes
through torch's BLAS is promised bit for bit: tests that compare with torch use the
bounds in tests/bounds.py."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import lorm_ext

ROOT = Path(__file__).resolve().parents[1]

EVERY_LOOP = textwrap.dedent("""
    import sys, torch, lorm_ext
    g = torch.Generator().manual_seed(7)
    def rand(*shape):
        return torch.randn(*shape, generator=g)
    def sym(d):
        m = rand(d, d)
        return m @ m.T / d
    out = {"isa": lorm_ext.cpu_isa()}
    # inspect_terms: flat scans and exact symmetry, 8-aligned and ragged sizes
    flat = rand(1000)
    flat[17], flat[500], flat[999] = float("nan"), float("inf"), -3e30
    asym = sym(37)
    asym[3, 30] += 1e-6
    nan_diagonal = sym(24)
    nan_diagonal[9, 9] = float("nan")
    terms = [flat, rand(13), sym(64), sym(37), asym, nan_diagonal, -sym(16)]
    out["inspect"] = lorm_ext.inspect_terms(terms, [False, False, True, True, True, True, True])
    # add_terms: float32 terms into float64 sums, a (d,) Gram and a (d, d) Gram
    sums = [rand(5, 19).double(), rand(19).abs().double(), sym(19).double()]
    terms = [rand(5, 19), rand(19).abs(), sym(19)]
    probes = [rand(3, 19).double()]
    out["add_verdicts"] = lorm_ext.add_terms(sums, terms, [0, 1, 2], [1e30] * 3, 1e-6, probes)
    out["add_sums"] = sums
    # lowrank_gram_update (fused float32 rows): ranks 3, 8 and 11, d not a multiple of 4
    for r in (3, 8, 11):
        acc, diag = torch.zeros(r, r, dtype=torch.float64), torch.zeros(45, dtype=torch.float64)
        lorm_ext.lowrank_gram_update(acc, rand(4, 9, 45), rand(r, 45).double(), diag)
        out[f"lowrank_{r}"] = (acc, diag)
    # spd_solve from a float32 factor (the narrowed copy of q), d = 70
    q = sym(70).double() + torch.eye(70, dtype=torch.float64)
    out["solve"] = torch.ops.lorm_ext.spd_solve(q, rand(6, 70).double(), 16)
    torch.save(out, sys.argv[1])
""")


def run_every_loop(path: Path, baseline: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), str(ROOT)])}
    env.pop("LORM_CPU_BASELINE", None)
    if baseline:
        env["LORM_CPU_BASELINE"] = "1"
    result = subprocess.run([sys.executable, "-c", EVERY_LOOP, str(path)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return torch.load(path)


def same_bits(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
            a.view(torch.int64 if a.element_size() == 8 else torch.int32),
            b.view(torch.int64 if b.element_size() == 8 else torch.int32))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_bits(x, y) for x, y in zip(a, b))
    return a == b


def test_cpu_isa_names_the_build():
    assert lorm_ext.cpu_isa() in {"avx2", "baseline", "generic", "reference"}


@pytest.mark.skipif(lorm_ext.cpu_isa() != "avx2", reason="needs the AVX2 build on an AVX2 CPU")
def test_avx2_and_baseline_builds_agree_bitwise(tmp_path):
    fast = run_every_loop(tmp_path / "avx2.pt", baseline=False)
    slow = run_every_loop(tmp_path / "baseline.pt", baseline=True)
    assert (fast.pop("isa"), slow.pop("isa")) == ("avx2", "baseline")
    assert fast.keys() == slow.keys()
    differ = [key for key in fast if not same_bits(fast[key], slow[key])]
    assert not differ, f"the two builds differ in {differ}"
    assert [bool(row[2]) for row in fast["inspect"]][2:6] == [True, True, False, True]


@pytest.mark.skipif(lorm_ext.cpu_isa() != "avx2", reason="needs the AVX2 build on an AVX2 CPU")
def test_baseline_build_passes_the_op_tests():
    """The property tests of every op with a vector loop, run again on the baseline build."""
    files = ["test_inspect_terms.py", "test_add_terms.py", "test_lowrank_gram_update.py",
             "test_spd_solve.py"]
    env = {**os.environ, "LORM_CPU_BASELINE": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             *[str(ROOT / "tests" / f) for f in files]],
                            env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-6000:]
    assert " passed" in result.stdout and " failed" not in result.stdout


AARCH64_TOOLS = ("aarch64-linux-gnu-g++", "qemu-aarch64-static")


@pytest.mark.skipif(not all(shutil.which(tool) for tool in AARCH64_TOOLS),
                    reason="needs aarch64-linux-gnu-g++ and qemu-aarch64-static "
                           "(Debian: g++-aarch64-linux-gnu qemu-user-static)")
def test_generic_build_of_the_loops_on_aarch64(tmp_path):
    """Not x86-64: one (128-bit) build of the loops. Cross-compiled and run under qemu
    against the scalar answers of csrc/tests/vector_loops_test.cpp."""
    binary = tmp_path / "vector_loops_test"
    sources = [ROOT / "csrc/cpu/value_loops.cpp", ROOT / "csrc/cpu/lowrank_rows.cpp",
               ROOT / "csrc/tests/vector_loops_test.cpp"]
    build = subprocess.run([AARCH64_TOOLS[0], "-std=c++17", "-O3", "-Wall", "-Werror", "-static",
                            *map(str, sources), "-o", str(binary)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([AARCH64_TOOLS[1], str(binary)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("0 failed"), run.stdout[-4000:]
