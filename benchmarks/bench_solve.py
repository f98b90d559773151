"""spd_solve's mixed-precision path (float32 factor refined in float64) against its
float64 path, by matrix size: where the crossover lies (lorm_ext.ops.MIXED_MIN_DIM).

    python benchmarks/bench_solve.py [--dims 768 1024 1536 2048 3072] [--out benchmarks/results]

q = alpha-0.5 regularised Gram of 2d Gaussian rows (an A-step q), p (8, d) as an
A-step's; both paths on the same inputs in the same run, median of --repeats calls, and
the largest relative difference between their answers.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import lorm_ext


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[768, 1024, 1536, 2048, 3072])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for d in args.dims:
        x = torch.randn(2 * d, d, dtype=torch.float64, generator=gen)
        g = x.T @ x
        q = 0.5 * g + 0.5 * torch.diag(g.diagonal())
        p = torch.randn(8, d, dtype=torch.float64, generator=gen)
        mixed = lambda: lorm_ext.spd_solve(q, p, mixed_min_dim=1)  # noqa: E731
        exact = lambda: lorm_ext.spd_solve(q, p, mixed_precision=False)  # noqa: E731
        difference = ((mixed() - exact()).norm() / exact().norm()).item()
        row = dict(d=d, mixed_ms=median_ms(mixed, args.repeats), float64_ms=median_ms(exact, args.repeats),
                   rel_diff=difference)
        rows.append(row)
        print(f"d {d:5d}  mixed {row['mixed_ms']:8.1f} ms  float64 {row['float64_ms']:8.1f} ms  "
              f"float64/mixed {row['float64_ms'] / row['mixed_ms']:5.2f}  rel diff {difference:.1e}", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "solve-cpu.json").write_text(json.dumps(rows, indent=1))
        lines = [f"# bench_solve on cpu ({platform.machine()}, {torch.get_num_threads()} threads)", "",
                 f"torch {torch.__version__}; one A-step q (d, d), p (8, d); median of {args.repeats} "
                 f"calls; default mixed_min_dim = {lorm_ext.ops.MIXED_MIN_DIM}.", "",
                 "| d | mixed (ms) | float64 (ms) | float64 / mixed | relative difference |",
                 "|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['d']} | {r['mixed_ms']:.1f} | {r['float64_ms']:.1f} | "
                  f"{r['float64_ms'] / r['mixed_ms']:.2f} | {r['rel_diff']:.1e} |" for r in rows]
        (args.out / "solve-cpu.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
