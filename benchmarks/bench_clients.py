"""Many clients per round on one machine: time per round and peak memory for the
embedded digits benchmark with N = 10, 100, 1000 clients.

    python benchmarks/bench_clients.py [--clients 10 100 1000] [--ranks 1 2] [--repeats 3] [--out DIR]

One task holding all 10 digit classes, Dirichlet beta 1.0 over N clients (clients
without samples sit the round out), one local epoch, the tiny ViT, one CPU thread.
Each N runs in its own process: after the data and model are built the peak RSS is
reset, then a B-step round and an A-step round run; the peak RSS above that baseline
shows whether memory grows with the number of clients (it must not: each client's
state is created when it trains and released after its update is added).

--ranks: each N also runs under `torchrun --nproc_per_node=R` (gloo), one CPU thread
per rank, the clients sharded over the ranks; the speed-up column compares a round
against 1 rank for the same N (weights are identical across ranks: the run checks).
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


def run_one(clients: int) -> dict | None:
    """The two rounds in this process (one rank of a torchrun run, or alone); None on
    every rank but the first."""
    from lorm.fcil import load_config
    from lorm.distributed import DistContext
    from lorm.fcil.loop import Run

    config = load_config(None, SETTINGS + [f"num_clients={clients}"])
    with tempfile.TemporaryDirectory() as tmp:
        runner = Run(config, Path(tmp), quiet=True)
        (Path(tmp) / "metrics.jsonl").write_text("")
        runner.server.start_task(0)
        baseline = reset_peak()  # measure the rounds alone
        seconds = []
        for rnd in range(2):
            start = time.perf_counter()
            runner.run_round(0, rnd)
            seconds.append(time.perf_counter() - start)
        if not runner.transport.is_main:
            return None
        senders = json.loads((Path(tmp) / "metrics.jsonl").read_text().splitlines()[-1])["senders"]
    return dict(clients=clients, ranks=getattr(runner.transport, "ctx", DistContext()).world, senders=senders, b_step_s=seconds[0], a_step_s=seconds[1],
                baseline_mb=baseline, peak_above_baseline_mb=status_mb("VmHWM") - baseline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per (N, ranks), alternating; the fastest counts (the machine's noise only adds)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        row = run_one(args.one)
        if row is not None:
            print(json.dumps(row))
        return
    rows = []
    for n in args.clients:
        runs = {ranks: [] for ranks in args.ranks}
        for _ in range(args.repeats):
            for ranks in args.ranks:
                runs[ranks].append(run_config(n, ranks))
        for ranks in args.ranks:
            add_row(rows, min(runs[ranks], key=lambda r: r["b_step_s"] + r["a_step_s"]), n, ranks)
    if args.out:
        write_results(args.out, rows, args.repeats)


def run_config(n: int, ranks: int) -> dict:
    launch = ([sys.executable] if ranks == 1 else
              [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"])
    out = subprocess.run(launch + [__file__, "--one", str(n)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def add_row(rows: list[dict], row: dict, n: int, ranks: int) -> None:
    single = next((r for r in rows if r["clients"] == n and r["ranks"] == 1), None)
    row["speedup"] = ((single["b_step_s"] + single["a_step_s"]) / (row["b_step_s"] + row["a_step_s"])
                      if single else None)
    rows.append(row)
    print(f"N {n:5d} ranks {ranks} ({row['senders']:4d} with data)  B-step round {row['b_step_s']:7.2f} s  "
          f"A-step round {row['a_step_s']:7.2f} s  per client "
          f"{(row['b_step_s'] + row['a_step_s']) / 2 / row['senders'] * 1e3:6.1f} ms  "
          f"peak RSS above baseline {row['peak_above_baseline_mb']:6.1f} MB", flush=True)


def write_results(out: Path, rows: list[dict], repeats: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "clients-cpu.json").write_text(json.dumps(rows, indent=1))
    lines = ["# bench_clients on cpu (1 thread per rank)", "",
             "Embedded digits, one task of 10 classes, Dirichlet beta 1.0, tiny ViT, one "
             "local epoch; each (N, ranks) in fresh processes (torchrun, gloo, for 2 ranks). "
             f"Best of {repeats} runs per row, alternating 1 and 2 ranks. Speed-up: the two rounds' "
             "time with 1 rank over theirs with this many.", "",
             "| clients | ranks | with data | B-step round (s) | A-step round (s) | speed-up | "
             "ms per client | peak RSS above baseline, rank 0 (MB) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        speedup = f"{r['speedup']:.2f}" if r.get("speedup") else "-"
        lines.append(f"| {r['clients']} | {r.get('ranks', 1)} | {r['senders']} | {r['b_step_s']:.2f} | "
                     f"{r['a_step_s']:.2f} | {speedup} | "
                     f"{(r['b_step_s'] + r['a_step_s']) / 2 / r['senders'] * 1e3:.1f} | "
                     f"{r['peak_above_baseline_mb']:.1f} |")
    (out / "clients-cpu.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
