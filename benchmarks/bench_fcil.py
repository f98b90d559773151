"""Federated class-incremental accuracy on the embedded digits benchmark: every method,
Dirichlet beta in {0.5, 0.1, 0.05}, 5 seeds, with the paired 95% t-intervals of LoRM
against each baseline.

    python benchmarks/bench_fcil.py [--seeds 0,1,2,3,4] [--betas 0.5,0.1,0.05]
                                    [--work DIR] [--out benchmarks/results]

Every method runs with the same settings (the Config defaults: the shipped tiny ViT,
5 tasks x 2 classes, 5 clients, 4 rounds, 4 local epochs, rank 4, the learning rates
chosen by the equal-budget grid in results/fcil-grid-cpu.md). Finished runs in --work are
reused, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _compare_results import write_compare_results

METHODS = ["lorm", "fedavg-lora", "regmean-lora"]
SETTINGS = ["num_threads=1"]


def main() -> int:
    from lorm.compare import compare, format_report

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--betas", default="0.5,0.1,0.05")
    parser.add_argument("--work", default="runs/bench-fcil", help="folder for the runs")
    parser.add_argument("--out", help="write fcil-cpu.json and fcil-cpu.md here")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    betas = [float(b) for b in args.betas.split(",")]
    start = time.perf_counter()
    report = compare(METHODS, seeds, betas, Path(args.work), None, SETTINGS, quiet=True,
                     jobs=args.jobs)
    text = format_report(report)
    print(text)
    if args.out:
        write_compare_results(args.out, "fcil-cpu",
                              "FCIL accuracy on the embedded digits benchmark (2-core CPU)",
                              report, text, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
