"""Server-side merge of a ViT-B-sized model: streaming Aggregator vs the naive way.

    python benchmarks/bench_merge.py [--clients 10 100 1000] [--alphas 0 0.5]
                                     [--blocks 12] [--memory-budget-gb 12] [--out DIR]

Model: `--blocks` transformer blocks x {qkv 2304x768, proj 768x768, fc1 3072x768,
fc2 768x3072} LoRA layers (rank 8, A-step round) plus a 100-class head (768 inputs,
alpha_head = 0.5). Each client update arrives as float32 tensors (as deserialised
from the wire) and is copied on arrival for both methods.

- ours: lorm.Aggregator: add each update into float64 running sums, then one
  batched lorm_ext.spd_solve per shape group (mixed precision, the default). The
  same sums are then solved again in float64 (mixed_precision=False) for the
  side-by-side solve columns; that second solve is not in "ours (s)".
- plain add: the same arrivals summed with a bare ``torch._foreach_add_`` (no checks):
  the floor of the "ours add" column, in its own process.
- naive (the paper's public code): keep every client's statistics, stack them per
  layer in float64, `torch.pinverse` per layer.

Each (method, alpha, N) runs in its own process; time is the server's work (receive,
sum, solve) and memory is the peak RSS above the process's baseline after the client
pool was built. Naive runs whose held updates would exceed --memory-budget-gb are
skipped and say so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

import lorm_ext
from _memory import reset_peak, status_mb
from lorm import Aggregator, ClientUpdate, merge

RANK, CLASSES, HEAD_D, POOL = 8, 100, 768, 4
SHAPES = {"attn.qkv": (2304, 768), "attn.proj": (768, 768), "mlp.fc1": (3072, 768),
          "mlp.fc2": (768, 3072)}


def layer_shapes(blocks: int) -> dict[str, tuple[int, int]]:
    return {f"blocks.{b}.{n}": s for b in range(blocks) for n, s in SHAPES.items()}


def client_pool(blocks: int, alpha: float) -> list[ClientUpdate]:
    """POOL distinct random A-step updates (float32), cycled over the simulated clients."""
    gen = torch.Generator().manual_seed(0)
    grams = {d: [(lambda x: x.T @ x)(torch.randn(64, d, generator=gen)) for _ in range(POOL)]
             for d in {768, 3072}}
    pool = []
    for i in range(POOL):
        layers = {}
        for name, (o, d) in layer_shapes(blocks).items():
            stats = merge.a_step_stats(torch.randn(RANK, d, generator=gen), grams[d][i], alpha)
            layers[name] = type(stats)(p=stats.p.float(), q=stats.q.float())
        head = merge.full_stats(torch.randn(CLASSES, HEAD_D, generator=gen), grams[768][i], 0.5)
        pool.append(ClientUpdate(0, 1, "A", 100, layers=layers,
                                 head=type(head)(p=head.p.float(), q=head.q.float()),
                                 head_bias=torch.randn(CLASSES, generator=gen)))
    return pool


def receive(update: ClientUpdate) -> ClientUpdate:
    """A fresh copy, as deserialising a message would give."""
    clone = lambda s: type(s)(p=s.p.clone(), q=s.q.clone())  # noqa: E731
    return ClientUpdate(update.task, update.round, update.factor, update.num_samples,
                        layers={n: clone(s) for n, s in update.layers.items()},
                        head=clone(update.head), head_bias=update.head_bias.clone())


def merge_ours(pool: list[ClientUpdate], clients: int) -> dict:
    """Seconds of the adds and of the solve, then the float64 solve of the same sums and
    the largest relative difference between the two answers."""
    start = time.perf_counter()
    agg = Aggregator(task=0, round=1, factor="A", dtype=torch.float64)
    for i in range(clients):
        agg.add(receive(pool[i % len(pool)]))
    added = time.perf_counter()
    mixed = agg.result()
    solved = time.perf_counter()
    exact = agg.result(mixed_precision=False)
    float64_s = time.perf_counter() - solved
    differences = [((mixed.layers[n] - x).norm() / x.norm()).item() for n, x in exact.layers.items()]
    return dict(seconds=solved - start, add_s=added - start, solve_s=solved - added,
                solve_float64_s=float64_s, solve_rel_diff=max(differences))


def add_floor(pool: list[ClientUpdate], clients: int) -> dict:
    """The same arrivals added with a plain ``_foreach_add_`` into float64 sums: no
    check at all, no structure; the least any server pays for these adds."""
    sums, start = None, time.perf_counter()
    for i in range(clients):
        ts = list(receive(pool[i % len(pool)]).tensors().values())
        sums = sums or [torch.zeros(t.shape, dtype=torch.float64) for t in ts]
        torch._foreach_add_(sums, ts)
    return dict(add_s=time.perf_counter() - start)


def merge_naive(pool: list[ClientUpdate], clients: int) -> None:
    held = [receive(pool[i % len(pool)]) for i in range(clients)]
    for name in list(held[0].layers) + ["head"]:
        stats = [u.head if name == "head" else u.layers[name] for u in held]
        p = torch.stack([s.p.double() for s in stats]).sum(0)
        q = torch.stack([s.q.double() for s in stats]).sum(0)
        if q.dim() == 1:
            q = torch.diag(q)
        p @ torch.pinverse(q)


def run_one(method: str, alpha: float, clients: int, blocks: int) -> dict:
    pool = client_pool(blocks, alpha)
    baseline = reset_peak()  # measure the merge alone
    start = time.perf_counter()
    timings = {"ours": merge_ours, "floor": add_floor, "naive": merge_naive}[method](pool, clients)
    seconds = time.perf_counter() - start
    # ours: its own seconds (adds + the mixed-precision solve) replace the outer ones
    return dict(dict(seconds=seconds), **(timings or {}), peak_mb=max(0.0, status_mb("VmHWM") - baseline))


def update_mb(blocks: int, alpha: float) -> float:
    numbers = sum(RANK * d + (d * d if alpha > 0 else d) for _, d in layer_shapes(blocks).values())
    return 4 * (numbers + CLASSES * HEAD_D + HEAD_D**2 + CLASSES) / 2**20


def naive_memory_gb(blocks: int, alpha: float, clients: int) -> float:
    """Every update held (float32) plus the largest layer stacked in float64 (twice:
    stacked copy and conversion) plus the dense (d, d) pinverse works on."""
    largest = max(max(RANK * d, d * d if alpha > 0 else d) for _, d in layer_shapes(blocks).values())
    dense = 3 * 8 * max(d for _, d in layer_shapes(blocks).values()) ** 2
    return (update_mb(blocks, alpha) * clients + (2 * 8 * largest * clients + dense) / 2**20) / 1024


def spawn(method: str, alpha: float, clients: int, blocks: int) -> dict:
    cmd = [sys.executable, __file__, "--one", method, str(alpha), str(clients), "--blocks",
           str(blocks)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_results(out: Path, header: str, rows: list[dict], blocks: int, append: bool) -> None:
    """merge-cpu.json and .md; with ``append``, rows of other (alpha, N) cases already
    there are kept (each row was measured in its own process either way)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "merge-cpu.json"
    if append and path.is_file():
        new = {(r["alpha"], r["clients"]) for r in rows}
        rows = [r for r in json.loads(path.read_text())["rows"]
                if (r["alpha"], r["clients"]) not in new] + rows
    rows = sorted(rows, key=lambda r: (r["alpha"], r["clients"]))
    path.write_text(json.dumps(dict(blocks=blocks, rows=rows), indent=1))
    lines = [header, "", "| alpha | clients | update (MB) | ours (s) | ours add (s) | ours solve (s) | "
             "float64 solve (s) | plain add (s) | add / plain | ours peak (MB) | naive (s) | "
             "naive peak (MB) | time naive/ours | memory naive/ours |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        o, nv = r["ours"], r["naive"]
        split = " | ".join(f"{o[k]:.2f}" if k in o else "-" for k in ("add_s", "solve_s", "solve_float64_s"))
        floor = r.get("floor")
        split += (f" | {floor['add_s']:.2f} | {o['add_s'] / floor['add_s']:.2f}" if floor and "add_s" in o
                  else " | - | -")
        tail = (f"{nv['seconds']:.2f} | {nv['peak_mb']:.0f} | "
                f"{nv['seconds'] / o['seconds']:.2f} | {nv['peak_mb'] / max(o['peak_mb'], 1):.2f}"
                if nv else f"skipped | ~{r['naive_skipped_gb'] * 1024:.0f} held | - | -")
        lines.append(f"| {r['alpha']} | {r['clients']} | {r['update_mb']:.1f} | "
                     f"{o['seconds']:.2f} | {split} | {o['peak_mb']:.0f} | {tail} |")
    (out / "merge-cpu.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--cases", nargs="+", metavar="ALPHA:N",
                        help="explicit (alpha, clients) pairs instead of --alphas x --clients")
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--memory-budget-gb", type=float, default=12.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--append", action="store_true",
                        help="keep the other cases already in --out's merge-cpu.json")
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "ALPHA", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        method, alpha, clients = args.one
        print(json.dumps(run_one(method, float(alpha), int(clients), args.blocks)))
        return

    header = (f"# bench_merge on cpu ({torch.get_num_threads()} threads)\n\n"
              f"torch {torch.__version__}, lorm_ext backend {lorm_ext.backend()}; {args.blocks} "
              f"blocks x 4 LoRA layers (r = {RANK}) + head {CLASSES} x {HEAD_D}, A-step round. "
              "Ratios > 1 mean ours is faster / smaller.")
    print(header, flush=True)
    rows = []
    cases = ([(float(c.split(":")[0]), int(c.split(":")[1])) for c in args.cases] if args.cases
             else [(a, n) for a in args.alphas for n in args.clients])
    for alpha, n in cases:
        per_client = update_mb(args.blocks, alpha)
        ours = spawn("ours", alpha, n, args.blocks)
        floor = spawn("floor", alpha, n, args.blocks)
        held_gb = naive_memory_gb(args.blocks, alpha, n)
        naive = (spawn("naive", alpha, n, args.blocks) if held_gb <= args.memory_budget_gb
                 else None)
        row = dict(alpha=alpha, clients=n, update_mb=per_client, ours=ours, floor=floor, naive=naive,
                   naive_skipped_gb=None if naive else held_gb)
        rows.append(row)
        naive_text = (f"naive {naive['seconds']:8.2f} s {naive['peak_mb']:9.0f} MB  "
                      f"time x{naive['seconds'] / ours['seconds']:6.2f}  "
                      f"memory x{naive['peak_mb'] / max(ours['peak_mb'], 1):6.2f}"
                      if naive else f"naive skipped (would hold ~{held_gb:.0f} GB)")
        print(f"alpha {alpha:3.1f} N {n:5d}  update {per_client:7.1f} MB  ours "
              f"{ours['seconds']:8.2f} s (add {ours['add_s']:.2f} vs plain {floor['add_s']:.2f}, "
              f"solve {ours['solve_s']:.2f}; "
              f"float64 solve {ours['solve_float64_s']:.2f}, max rel diff "
              f"{ours['solve_rel_diff']:.1e}) {ours['peak_mb']:9.0f} MB  {naive_text}", flush=True)
    if args.out:
        write_results(args.out, header, rows, args.blocks, args.append)


if __name__ == "__main__":
    main()
