"""What a leaner wire costs: bfloat16 client updates against float32.

    python benchmarks/bench_wire.py [--seeds 0,1,2,3,4] [--work DIR] [--out DIR]

1. Upload per client per round at ViT-B/16 sizes (48 LoRA layers r = 8, head 100):
   exact message payloads for each wire setting, against the naive message (full float32
   Grams of every layer + the model state dict).
2. Merged-weight error: the client updates of one B-step and one A-step round of the
   digits benchmark, summed after a trip through the wire in each setting; relative
   Frobenius error of the merged factors and head against float64 messages.
3. FAA on the digits benchmark over seeds for each setting, with the paired 95%
   t-interval of each setting against float32.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

SETTINGS = {  # label -> (wire_dtype, wire_gram_dtype)
    "float32": ("float32", "float32"),
    "bf16 p, f32 q": ("bfloat16", "float32"),
    "bf16 p and q": ("bfloat16", "bfloat16"),
}


def upload_ratios(rank: int = 8) -> dict:
    from timm import create_model

    from lorm import ClientUpdate, SolveStats
    from lorm.lora import head_of, inject_lora

    model = create_model("vit_base_patch16_224", pretrained=False, num_classes=100)
    layers = inject_lora(model, rank)
    head = head_of(model)
    naive = sum(t.numel() * 4 for t in model.state_dict().values()) + 4 * (
        sum(l.weight.shape[1] ** 2 for l in layers.values()) + head.in_features ** 2)
    meta = lambda *s: torch.empty(*s, device="meta")  # noqa: E731  (shapes only)
    c, d_h = head.out_features, head.in_features
    rounds = {
        "B-step": {n: SolveStats(p=meta(l.weight.shape[0], rank), q=meta(rank, rank))
                   for n, l in layers.items()},
        "A-step alpha=0": {n: SolveStats(p=meta(rank, l.weight.shape[1]), q=meta(l.weight.shape[1]))
                           for n, l in layers.items()},
    }
    out = {"naive_bytes": naive, "rows": []}
    for kind, layer_stats in rounds.items():
        update = ClientUpdate(0, 0, kind[0], 1, layers=layer_stats,
                              head=SolveStats(p=meta(c, d_h), q=meta(d_h, d_h)),
                              head_bias=meta(c))
        for label, (wire, gram) in SETTINGS.items():
            size = update.payload_nbytes(getattr(torch, wire), getattr(torch, gram))
            out["rows"].append({"round": kind, "setting": label, "bytes": size,
                                "naive_over_ours": naive / size})
    return out


def merged_errors() -> list[dict]:
    import tempfile

    from lorm import Aggregator, ClientUpdate
    from lorm.fcil import load_config
    from lorm.fcil.loop import Run

    config = load_config(None, ["num_threads=1", "seed=0"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runner = Run(config, Path(tmp), quiet=True)
        (Path(tmp) / "metrics.jsonl").write_text("")
        server, client = runner.server, runner.transport.client
        server.start_task(0)
        for rnd in (0, 1):  # B-step, then A-step (after applying the B-step merge)
            updates = []
            for c in runner.sampled_clients(0, rnd):
                client.load(server.deployed_tensors())
                updates.append(client.round_update(0, rnd, c))
            merged = {}
            for label, (wire, gram) in [("float64", ("float64", "float64")), *SETTINGS.items()]:
                agg = Aggregator(0, rnd, runner.method.message_factor(rnd), dtype=torch.float64)
                for u in updates:
                    agg.add(ClientUpdate.from_bytes(u.to_bytes(getattr(torch, wire),
                                                               getattr(torch, gram))))
                merged[label] = agg.result()
            exact = merged.pop("float64")
            for label, result in merged.items():
                err = max((result.layers[n] - exact.layers[n]).norm().item()
                          / max(exact.layers[n].norm().item(), 1e-30) for n in exact.layers)
                head_err = ((result.head_weight - exact.head_weight).norm()
                            / exact.head_weight.norm()).item()
                rows.append({"round": runner.method.trains(rnd) + "-step", "setting": label,
                             "max_layer_rel_error": err, "head_rel_error": head_err})
            runner.method.apply(rnd, exact, server.layers, server.head, torch.Generator())
    return rows


def accuracy_over_seeds(seeds: list[int], work: Path, jobs: int) -> dict:
    from lorm.compare import compare, paired_difference

    faa = {}
    for label, (wire, gram) in SETTINGS.items():
        report = compare(["lorm"], seeds, [None], work / label.replace(" ", "_").replace(",", ""),
                         None, ["num_threads=1", f"wire_dtype={wire}", f"wire_gram_dtype={gram}"],
                         quiet=True, jobs=jobs)
        faa[label] = next(iter(report["by_beta"].values()))["rows"]["lorm"]["per_seed_faa"]
    return {"per_seed_faa": faa,
            "difference_vs_float32": {label: paired_difference(values, faa["float32"])
                                      for label, values in faa.items() if label != "float32"}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--work", default="runs/bench-wire")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    result = {"upload": upload_ratios(), "merged_error": merged_errors(),
              "accuracy": accuracy_over_seeds(seeds, Path(args.work), args.jobs)}
    lines = ["# Wire precision: bfloat16 updates against float32 (2-core CPU)", "",
             f"`python {' '.join(sys.argv)}`", "",
             "## Upload per client per round, ViT-B/16, r = 8 (exact payload)", "",
             f"Naive message (full float32 Grams + state dict): "
             f"{result['upload']['naive_bytes'] / 2**20:.1f} MiB.", "",
             "| round | setting | MiB | naive / ours |", "|---|---|---:|---:|"]
    lines += [f"| {r['round']} | {r['setting']} | {r['bytes'] / 2**20:.3f} | "
              f"{r['naive_over_ours']:.0f} |" for r in result["upload"]["rows"]]
    lines += ["", "## Merged-weight error against float64 messages (digits, task 0)", "",
              "| round | setting | max relative error, LoRA layers | relative error, head |",
              "|---|---|---:|---:|"]
    lines += [f"| {r['round']} | {r['setting']} | {r['max_layer_rel_error']:.2e} | "
              f"{r['head_rel_error']:.2e} |" for r in result["merged_error"]]
    acc = result["accuracy"]
    lines += ["", f"## FAA on digits (lorm, seeds {args.seeds})", "",
              "| setting | FAA per seed (%) | paired difference vs float32 (pp, 95% CI) |",
              "|---|---|---|"]
    for label, values in acc["per_seed_faa"].items():
        d = acc["difference_vs_float32"].get(label)
        diff = "" if d is None else (f"{100 * d['mean']:+.2f} [{100 * d['low']:+.2f}, "
                                     f"{100 * d['high']:+.2f}]"
                                     + ("" if d["significant"] else ", not significant"))
        lines.append(f"| {label} | {', '.join(f'{100 * v:.2f}' for v in values)} | {diff} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "wire-cpu.json").write_text(json.dumps(result, indent=1))
        (args.out / "wire-cpu.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
