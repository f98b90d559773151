"""Runs every lorm_ext op on each available backend and prints a table.

    python -m lorm_ext.demo [--d 768] [--rank 8] [--images 16]

For each op: time per call and the largest relative difference from the float64
reference (lorm_ext.reference), on the compiled CPU kernels, the CUDA kernels when a
GPU is present, and the reference itself.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable

import torch

import lorm_ext
from lorm_ext import reference


@dataclass
class Case:
    name: str
    shape: str
    compiled: Callable[[str], torch.Tensor]  # device -> result
    oracle: Callable[[], torch.Tensor]


def _timed(fn: Callable[[], torch.Tensor], device: str, repeats: int) -> tuple[torch.Tensor, float]:
    out = fn()  # warm-up (and the result we check)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return out, (time.perf_counter() - start) / repeats * 1e3


def _relative_difference(result: torch.Tensor, oracle: torch.Tensor) -> float:
    diff = (result.double().cpu() - oracle.double()).abs().max()
    return (diff / oracle.double().abs().max().clamp_min(1e-300)).item()


def _cases(d: int, rank: int, images: int) -> list[Case]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(images, 197, d, generator=gen).bfloat16()
    a = torch.randn(rank, d, generator=gen) / d**0.5
    g = torch.randn(4 * d, d, dtype=torch.float64, generator=gen)
    q = torch.stack([g.T @ g] * 4)
    p = torch.randn(4, rank, d, dtype=torch.float64, generator=gen)

    def stat(shape, run, run_ref):
        def compiled(device):
            acc = torch.zeros(shape, device=device)
            run(acc, x.to(device), a.to(device))
            return acc

        def oracle():
            acc = torch.zeros(shape, dtype=torch.float64)
            run_ref(acc, x, a)
            return acc

        return compiled, oracle

    rows = f"x ({images}, 197, {d}) bf16"
    return [
        Case("gram_update (diagonal)", f"{rows} -> ({d},)",
             *stat((d,), lambda acc, x, a: lorm_ext.gram_update(acc, x),
                   lambda acc, x, a: reference.gram_update(acc, x))),
        Case("gram_update (full)", f"{rows} -> ({d}, {d})",
             *stat((d, d), lambda acc, x, a: lorm_ext.gram_update(acc, x),
                   lambda acc, x, a: reference.gram_update(acc, x))),
        Case("lowrank_gram_update", f"{rows}, a ({rank}, {d}) -> ({rank}, {rank})",
             *stat((rank, rank), lambda acc, x, a: lorm_ext.lowrank_gram_update(acc, x, a),
                   lambda acc, x, a: reference.lowrank_gram_update(acc, x, a))),
        Case("spd_solve", f"q (4, {d}, {d}), p (4, {rank}, {d})",
             lambda device: lorm_ext.spd_solve(q.to(device), p.to(device)),
             lambda: reference.spd_solve(q, p)),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=768, help="feature dimension (768: ViT-B)")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank r")
    parser.add_argument("--images", type=int, default=16, help="images of 197 tokens per batch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    compiled = lorm_ext.backend() != "reference"
    print(f"lorm_ext backend: {lorm_ext.backend()}  (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, GPU: {torch.cuda.is_available()})")
    print(f"build: {lorm_ext.load_message()}")
    header = f"{'op':<24} {'runs on':<16} {'ms/call':>10} {'max rel. diff':>14}  shapes"
    print(header)
    print("-" * len(header))
    for case in _cases(args.d, args.rank, args.images):
        oracle, ref_ms = _timed(case.oracle, "cpu", args.repeats)
        for device in devices:
            label = f"{'compiled' if compiled else 'reference'} {device}"
            result, ms = _timed(lambda: case.compiled(device), device, args.repeats)
            print(f"{case.name:<24} {label:<16} {ms:>10.2f} "
                  f"{_relative_difference(result, oracle):>14.2e}  {case.shape}")
        print(f"{case.name:<24} {'reference cpu':<16} {ref_ms:>10.2f} {0.0:>14.2e}  (float64 oracle)")


if __name__ == "__main__":
    main()
