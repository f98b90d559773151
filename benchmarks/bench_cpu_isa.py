"""The CPU vector loops' two x86-64 builds side by side: AVX2 against baseline (what a
CPU without AVX2 runs; LORM_CPU_BASELINE=1 makes this one run it).

    python benchmarks/bench_cpu_isa.py [--rounds 3] [--out benchmarks/results]

Each build runs in its own process (the choice is made once per process), one thread;
the two processes take turns for --rounds rounds and each figure is the best over all
rounds, so a slow spell of the machine hits both alike. Inputs are one ViT-B update's
sizes: 1.25 M float32 values (a flat scan, and add_terms into float64 sums), a
768 x 768 symmetric q, and the B-step statistic of 16 images' tokens
(16 x 197 x 768, r = 8).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TIMINGS = r"""
import json, time, torch, lorm_ext
torch.manual_seed(0)
torch.set_num_threads(1)
flat = torch.randn(1_250_000)
m = torch.randn(768, 768)
sym = m + m.T
sums = torch.zeros(1_250_000, dtype=torch.float64)
x, a = torch.randn(16, 197, 768), torch.randn(8, 768, dtype=torch.float64)
h, diag = torch.zeros(8, 8, dtype=torch.float64), torch.zeros(768, dtype=torch.float64)
def best_ms(fn, n):
    fn()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n * 1e3)
    return best
print(json.dumps({"isa": lorm_ext.cpu_isa(), "ms": {
    "inspect_terms, flat 1.25 M float32": best_ms(lambda: lorm_ext.inspect_terms([flat]), 20),
    "inspect_terms, symmetric 768 x 768": best_ms(lambda: lorm_ext.inspect_terms([sym], [True]), 20),
    "add_terms, 1.25 M float32 into float64": best_ms(lambda: lorm_ext.add_terms(
        [sums], [flat], [0], [1e30], 1e-4, [], check=False), 20),
    "lowrank_gram_update, 16 x 197 x 768, r = 8": best_ms(
        lambda: lorm_ext.lowrank_gram_update(h, x, a, diag), 3),
}}))
"""


def run(baseline: bool) -> dict:
    env = {**os.environ, "LORM_CPU_BASELINE": "1" if baseline else "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", TIMINGS], env=env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for baseline in (False, True):
            found = run(baseline)
            for name, ms in found["ms"].items():
                row = best.setdefault(name, {})
                row[found["isa"]] = min(row.get(found["isa"], float("inf")), ms)
    isas = sorted({isa for row in best.values() for isa in row})
    if isas != ["avx2", "baseline"]:
        sys.exit(f"needs an AVX2 CPU to compare the two builds; ran {isas}")
    lines = [f"# CPU vector loops: AVX2 build against baseline x86-64 ({platform.processor() or platform.machine()}, "
             f"1 thread, best of {args.rounds} alternating rounds)", "",
             "| loop | avx2 ms | baseline ms | baseline / avx2 |", "|---|---:|---:|---:|"]
    for name, row in best.items():
        lines.append(f"| {name} | {row['avx2']:.3f} | {row['baseline']:.3f} | "
                     f"{row['baseline'] / row['avx2']:.2f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cpu-isa-cpu.md").write_text(report)
        (args.out / "cpu-isa-cpu.json").write_text(json.dumps(best, indent=1))


if __name__ == "__main__":
    main()
