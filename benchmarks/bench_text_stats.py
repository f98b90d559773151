"""A text round's statistics pass against the encoder's own forward on the same batch:
MiniLM (all-MiniLM-L6-v2) with LoRA on its 36 linear layers, CLINC150 queries.

    python benchmarks/bench_text_stats.py [--data-root ../shared/data/clinc150]
        [--batch 64] [--rank 4] [--repeats 15] [--out benchmarks/results]

Variants, each the same eval-mode no-grad forward on the same batch (trimmed to its
longest query): no hooks (the floor); the collectors with padding rows dropped by the
row mask (``index_select`` of the marked rows, the default), with padding rows zeroed
instead (``x * mask``: same Grams, every row goes through the kernel), and with every
row taken (``stats_padding: include``). Modes: ``diag`` (A-step, alpha 0) and ``lowrank``
(B-step). Each variant runs once per repeat in turn; a time is the best of its
repeats; `x forward` is the ratio of bests (it carries the drift between runs),
`x own forward` the run over the run less the time inside the collectors' hooks and
the row mask's setting, best over the repeats (measured within each run).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lorm.backbones import make_backbone
from lorm.backbones.base import build_lora
from lorm.fcil import load_config
from lorm.lora import kaiming_uniform
from lorm.stats import StatsCollector

from _hook_clock import HookClock

ROW_RULES = {
    "mask": StatsCollector._data_rows,
    "zero": lambda self, x, name: x * self.mask.unsqueeze(-1).to(x.dtype),
    "include": lambda self, x, name: x,
}


def queries(data_root: str | None, count: int) -> list[str]:
    path = Path(data_root or "") / "data_full.json"
    if data_root and path.is_file():
        rows = json.loads(path.read_text())["train"]
        return [t for t, _ in rows[::len(rows) // count][:count]]
    words = "please set an alarm for seven tomorrow what is my balance transfer money to".split()
    return [" ".join(words[i % 5:i % 5 + 3 + i % 9]) for i in range(count)]


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(None, ["dataset=clinc150", "backbone=minilm", f"rank={args.rank}"])
    backbone = make_backbone(config.backbone)
    model, layers, head = build_lora(backbone, config, 150)
    gen = torch.Generator().manual_seed(0)
    for layer in layers.values():
        layer.set_factors(a=kaiming_uniform(tuple(layer.A.shape), gen),
                          b=torch.randn(layer.B.shape, generator=gen) * 0.01)
    model.eval()
    from lorm.fcil.datasets.clinc150 import TextDataset
    texts = queries(args.data_root, args.batch)
    data = backbone.prepare(TextDataset(texts, torch.zeros(len(texts), dtype=torch.long)),
                            list(range(len(texts))))
    inputs = backbone.to_device({k: v for k, v in data.encoded.items()}, torch.device("cpu"))
    mask = backbone.rows_mask(inputs)
    results = {"batch": args.batch, "tokens": int(mask.numel()), "real_tokens": int(mask.sum()),
               "rank": args.rank, "threads": args.threads, "layers": len(layers)}

    def forward():
        with torch.no_grad():
            model(inputs)

    in_stats: dict[str, list[float]] = {}  # variant -> seconds in the hooks + mask, per run

    def collected(mode, rule):
        def run():
            original = StatsCollector._data_rows
            StatsCollector._data_rows = ROW_RULES[rule]
            try:
                with torch.no_grad(), HookClock(list(layers.values()) + [head]) as clock, \
                        StatsCollector(layers, mode, head) as stats:
                    clock.arm()
                    start = time.perf_counter()
                    stats.mask = mask  # the per-batch cost outside the hooks
                    clock.seconds += time.perf_counter() - start
                    model(inputs)
                in_stats.setdefault(f"{mode}/{rule}", []).append(clock.seconds)
            finally:
                StatsCollector._data_rows = original
        return run

    variants = {"forward": forward}
    for mode in ("diag", "lowrank"):
        for rule in ROW_RULES:
            variants[f"{mode}/{rule}"] = collected(mode, rule)
    for fn in variants.values():
        fn()  # warm-up
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(best(fn, 1))
    floor = min(times["forward"])
    results["seconds"] = {name: min(t) for name, t in times.items()}
    results["ratio_to_forward"] = {name: min(t) / floor for name, t in times.items()}
    # Within each run: (the run) / (the run less its statistics time), best over the
    # repeats (the warm-up run left out); free of the drift between runs.
    results["ratio_to_own_forward"] = {
        name: min(t / (t - h) for h, t in zip(in_stats[name][1:], times[name]))
        for name in in_stats}
    lines = [f"MiniLM + LoRA r={args.rank} on {len(layers)} layers, {args.batch} queries "
             f"({results['real_tokens']} real of {results['tokens']} token rows), "
             f"{args.threads} thread(s), best of {args.repeats}:",
             f"  {'variant':<18} {'ms':>8} {'x forward':>10} {'x own forward':>14}"]
    for name in variants:
        own = results["ratio_to_own_forward"].get(name, 1.0)
        lines.append(f"  {name:<18} {1e3 * results['seconds'][name]:>8.2f} "
                     f"{results['ratio_to_forward'][name]:>10.3f} {own:>14.3f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "text-stats-cpu.json").write_text(json.dumps(results, indent=1))
        (out / "text-stats-cpu.md").write_text(
            "# Text statistics pass vs the encoder's forward (CPU)\n\n"
            "`python benchmarks/bench_text_stats.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                if v is not None and k != "out") + "`\n\n```\n" + text + "\n```\n")


if __name__ == "__main__":
    main()
