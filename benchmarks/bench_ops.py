"""lorm_ext ops vs the naive torch way and vs the float64 reference, at ViT-B sizes.

    python benchmarks/bench_ops.py [--device cpu|cuda] [--quick] [--out benchmarks/results]

Every row times the three ways in the same run on the same inputs (median of
--repeats calls after a warm-up) and prints the ratios naive/ours and reference/ours.
Rows: 16 images x 197 tokens. The naive way is what a plain PyTorch RegMean/LoRM
implementation does: a float32 `x.T @ x` per batch (then `torch.diag` for the
diagonal, or `A G A.T` for the B-step), and `p @ torch.linalg.pinv(q)` in float64
for solves.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

import lorm_ext
from lorm_ext import reference

ROWS = (16, 197)


def median_ms(fn: Callable[[], object], device: str, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def naive_gram(x: torch.Tensor) -> torch.Tensor:
    rows = x.reshape(-1, x.shape[-1]).float()
    return rows.T @ rows


def gram_rows(d: int, dtype: torch.dtype, device: str, gen: torch.Generator):
    x = torch.randn(*ROWS, d, generator=gen).to(dtype).to(device)
    label = f"x {ROWS + (d,)} {str(dtype).replace('torch.', '')}"

    def diag_ours():
        acc = torch.zeros(d, device=device)
        lorm_ext.gram_update(acc, x)

    def full_ours():
        acc = torch.zeros(d, d, device=device)
        lorm_ext.gram_update(acc, x)

    def diag_ref():
        reference.gram_update(torch.zeros(d, dtype=torch.float64, device=device), x)

    def full_ref():
        reference.gram_update(torch.zeros(d, d, dtype=torch.float64, device=device), x)

    return [
        ("gram diag (alpha=0)", label, diag_ours, lambda: torch.diag(naive_gram(x)), diag_ref),
        ("gram full (alpha>0)", label, full_ours, lambda: naive_gram(x), full_ref),
    ]


def lowrank_rows(d: int, r: int, device: str, gen: torch.Generator, dtype=torch.bfloat16):
    x = torch.randn(*ROWS, d, generator=gen).to(dtype).to(device)
    a = (torch.randn(r, d, generator=gen) / d**0.5).to(device)

    def ours():
        lorm_ext.lowrank_gram_update(torch.zeros(r, r, device=device), x, a,
                                     torch.zeros(d, device=device))

    def naive():
        g = naive_gram(x)
        return a @ g @ a.T, torch.diag(g)

    def ref():
        reference.lowrank_gram_update(torch.zeros(r, r, dtype=torch.float64, device=device), x, a,
                                      torch.zeros(d, dtype=torch.float64, device=device))

    return [(f"B-step stat r={r}", f"x {ROWS + (d,)} {str(dtype).replace('torch.', '')}", ours, naive, ref)]


def solve_rows(device: str, gen: torch.Generator):
    out = []
    for label, batch, m, d in [("A-step solve", 12, 8, 768), ("head RegMean solve", 1, 100, 768),
                               ("A-step solve", 2, 8, 3072), ("B-step solve", 48, 768, 8)]:
        x = torch.randn(batch, 2 * d, d, dtype=torch.float64, generator=gen)
        q = (x.mT @ x).to(device)
        p = torch.randn(batch, m, d, dtype=torch.float64, generator=gen).to(device)
        shape = f"{batch} x q ({d}, {d}), p ({m}, {d})"
        out.append((label, shape, lambda q=q, p=p: lorm_ext.spd_solve(q, p),
                    lambda q=q, p=p: torch.stack([p[i] @ torch.linalg.pinv(q[i])
                                                  for i in range(q.shape[0])]),
                    lambda q=q, p=p: reference.spd_solve(q, p)))
    d, layers = 3072, 4  # the naive pinv of a (d, d) diagonal matrix takes seconds each
    q = torch.rand(layers, d, dtype=torch.float64, generator=gen).to(device)
    p = torch.randn(layers, 8, d, dtype=torch.float64, generator=gen).to(device)
    out.append(("A-step solve alpha=0", f"{layers} x q ({d},) diagonal, p (8, {d})",
                lambda: lorm_ext.spd_solve(q, p),
                lambda: torch.stack([p[i] @ torch.linalg.pinv(torch.diag(q[i]))
                                     for i in range(layers)]),
                lambda: reference.spd_solve(q, p)))
    return out


def run(device: str, repeats: int, quick: bool) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    dims = [768] if quick else [768, 3072]
    rows = []
    for d in dims:
        for dtype in (torch.bfloat16, torch.float32):
            rows += gram_rows(d, dtype, device, gen)
        for r in ([8] if quick else [1, 8, 32]):
            rows += lowrank_rows(d, r, device, gen)
        rows += lowrank_rows(d, 8, device, gen, torch.float32)  # what a float32 forward hands a hook
    rows += solve_rows(device, gen)[: 2 if quick else None]
    results = []
    for name, shape, ours, naive, ref in rows:
        t_ours, t_naive, t_ref = (median_ms(f, device, repeats) for f in (ours, naive, ref))
        results.append(dict(op=name, shape=shape, ours_ms=t_ours, naive_ms=t_naive, ref_ms=t_ref,
                            naive_over_ours=t_naive / t_ours, ref_over_ours=t_ref / t_ours))
        print(f"{name:<22} {shape:<40} ours {t_ours:9.2f} ms  naive {t_naive:9.2f} ms "
              f"(x{t_naive / t_ours:6.2f})  reference {t_ref:9.2f} ms (x{t_ref / t_ours:6.2f})",
              flush=True)
    return results


def markdown(results: list[dict], header: str) -> str:
    lines = [header, "", "| op | inputs | ours (ms) | naive (ms) | naive / ours | reference (ms) "
             "| reference / ours |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['op']} | {r['shape']} | {r['ours_ms']:.2f} | {r['naive_ms']:.2f} | "
                     f"{r['naive_over_ours']:.2f} | {r['ref_ms']:.2f} | {r['ref_over_ours']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="d = 768 and r = 8 only")
    parser.add_argument("--out", type=Path, help="folder for ops-<device>.md and .json")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    machine = (torch.cuda.get_device_name() if args.device == "cuda"
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    header = (f"# bench_ops on {args.device} ({machine})\n\ntorch {torch.__version__}, lorm_ext "
              f"backend {lorm_ext.backend()}, median of {args.repeats} calls; ratios > 1 mean "
              "ours is faster.")
    print(header)
    results = run(args.device, args.repeats, args.quick)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"ops-{args.device}.md").write_text(markdown(results, header))
        (args.out / f"ops-{args.device}.json").write_text(json.dumps(
            dict(device=args.device, machine=machine, torch=torch.__version__, results=results),
            indent=1))


if __name__ == "__main__":
    main()
