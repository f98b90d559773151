"""Many clients per round on one machine: time per round and peak memory for the
embedded digits benchmark with N = 10, 100, 1000 clients.

    python benchmarks/bench_clients.py [--clients 10 100 1000] [--out DIR]

One task holding all 10 digit classes, Dirichlet beta 1.0 over N clients (clients
without samples sit the round out), one local epoch, the tiny ViT, one CPU thread.
Each N runs in its own process: after the data and model are built the peak RSS is
reset, then a B-step round and an A-step round run; the peak RSS above that baseline
shows whether memory grows with the number of clients (it must not: each client's
state is created when it trains and released after its update is added).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _memory import reset_peak, status_mb

SETTINGS = ["num_tasks=1", "beta=1.0", "min_samples_per_client=0", "rounds=2",
            "local_epochs=1", "num_threads=1"]


def run_one(clients: int) -> dict:
    from lorm.fcil import load_config
    from lorm.fcil.loop import Run

    config = load_config(None, SETTINGS + [f"num_clients={clients}"])
    with tempfile.TemporaryDirectory() as tmp:
        runner = Run(config, Path(tmp), quiet=True)
        (Path(tmp) / "metrics.jsonl").write_text("")
        import torch
        runner.method.start_task(runner.layers, torch.Generator().manual_seed(0))
        baseline = reset_peak()  # measure the rounds alone
        seconds = []
        for rnd in range(2):
            start = time.perf_counter()
            runner.run_round(0, rnd)
            seconds.append(time.perf_counter() - start)
        senders = json.loads((Path(tmp) / "metrics.jsonl").read_text().splitlines()[-1])["senders"]
    return dict(clients=clients, senders=senders, b_step_s=seconds[0], a_step_s=seconds[1],
                baseline_mb=baseline, peak_above_baseline_mb=status_mb("VmHWM") - baseline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    rows = []
    for n in args.clients:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True,
                             text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"N {n:5d} ({row['senders']:4d} with data)  B-step round {row['b_step_s']:7.2f} s  "
              f"A-step round {row['a_step_s']:7.2f} s  per client "
              f"{(row['b_step_s'] + row['a_step_s']) / 2 / row['senders'] * 1e3:6.1f} ms  "
              f"peak RSS above baseline {row['peak_above_baseline_mb']:6.1f} MB", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "clients-cpu.json").write_text(json.dumps(rows, indent=1))
        lines = ["# bench_clients on cpu (1 thread)", "",
                 "Embedded digits, one task of 10 classes, Dirichlet beta 1.0, tiny ViT, one "
                 "local epoch; each N in a fresh process.", "",
                 "| clients | with data | B-step round (s) | A-step round (s) | ms per client | "
                 "peak RSS above baseline (MB) |", "|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['clients']} | {r['senders']} | {r['b_step_s']:.2f} | "
                         f"{r['a_step_s']:.2f} | "
                         f"{(r['b_step_s'] + r['a_step_s']) / 2 / r['senders'] * 1e3:.1f} | "
                         f"{r['peak_above_baseline_mb']:.1f} |")
        (args.out / "clients-cpu.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
