"""Per-update cost of the server's checked add against a plain add of the same tensors.

    python benchmarks/bench_server_add.py [--alpha 0] [--repeats 300] [--out benchmarks/results]

One ViT-B-sized A-step update (bench_merge's model: 48 LoRA layers r = 8 + a 100-class
head), float32 terms into float64 running sums, timed side by side in one run:

- plain: ``torch._foreach_add_(sums, terms)`` -- no check at all (the floor).
- add_terms: ``lorm_ext.add_terms`` alone -- every value check and the add, one call.
- Aggregator.add: all of the server's work per update (structure checks too).
- receive: the copy of an update that deserialising it would cost (for scale).
- from_bytes: what the fcil server really does on arrival: the wire message (float32,
  packed q) checked (SHA-256), parsed and unpacked, tensors kept in the wire dtype.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import lorm_ext
from bench_merge import client_pool, receive
from lorm import Aggregator, ClientUpdate
from lorm.aggregate import FINITE_LIMIT, NEGATIVE_RTOL, SQUARE_GRAM, _kind


def per_call_ms(fns: dict, repeats: int, rounds: int = 5) -> dict[str, float]:
    """Best milliseconds per call of each function; the functions take turns, a batch of
    ``repeats`` calls each per round, so a slow spell of the machine hits them alike."""
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / repeats * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    update = client_pool(12, args.alpha)[0]
    agg = Aggregator(0, 1, "A")
    agg.add(receive(update))
    arrived = receive(update)
    terms = agg._terms(arrived)
    keys = list(terms)
    sums, ts = [agg._sums[k] for k in keys], [terms[k] for k in keys]
    kinds = [_kind(k, terms[k]) for k in keys]
    probes = [agg._probes(terms[k]) for k, kind in zip(keys, kinds) if kind == SQUARE_GRAM]
    limits = [FINITE_LIMIT / 2] * len(keys)
    message = update.to_bytes(torch.float32)
    rows = per_call_ms({
        "plain _foreach_add_": lambda: torch._foreach_add_(sums, ts),
        "add_terms (checks + add)":
            lambda: lorm_ext.add_terms(sums, ts, kinds, limits, NEGATIVE_RTOL, probes, check=False),
        "Aggregator.add (all the server does)": lambda: agg.add(arrived),
        "receive (copy of the update)": lambda: receive(update),
        "from_bytes (the wire message, as the fcil server receives it)":
            lambda: ClientUpdate.from_bytes(message, dtype=None),
    }, args.repeats)
    mb = sum(t.numel() * t.element_size() for t in ts) / 2**20
    plain = rows["plain _foreach_add_"]
    lines = [f"# bench_server_add on cpu ({platform.machine()}, {torch.get_num_threads()} threads)", "",
             f"torch {torch.__version__}, lorm_ext backend {lorm_ext.backend()}; one A-step update, "
             f"alpha {args.alpha}: {len(ts)} tensors, {mb:.1f} MB float32 into float64 sums; best of 5 "
             f"rounds, each function a batch of {args.repeats} calls in turn.", "",
             "| per update | ms | / plain add |", "|---|---:|---:|"]
    lines += [f"| {name} | {ms:.3f} | {ms / plain:.2f} |" for name, ms in rows.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "server-add-cpu.md").write_text(text)
        (args.out / "server-add-cpu.json").write_text(json.dumps(dict(alpha=args.alpha, mb=mb, ms=rows), indent=1))


if __name__ == "__main__":
    main()
