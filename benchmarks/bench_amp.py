"""bfloat16 autocast against float32 on this CPU, per backbone: one LoRA training step
(forward + backward, batch 16), side by side, taking turns; the table behind
``Backbone.cpu_bf16_pays`` and ``amp: auto`` (lorm.precision).

    python benchmarks/bench_amp.py [--repeats 3] [--out benchmarks/results]

Random weights (the time does not depend on the values); LoRA on the presets' targets
with A and B trainable, as in a client's round.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from _results import emit

ROOT = Path(__file__).resolve().parents[1]
IMAGES = [("vit_base_patch16_224", 224), ("vit_small_patch16_224", 224), ("test_vit.r160_in1k", 160)]
TEXT_TOKENS = (24, 64)


def lora_trainable(model, rank: int, targets) -> None:
    from lorm.lora import inject_lora

    for p in model.parameters():
        p.requires_grad_(False)
    inject_lora(model, rank, targets)
    for name, p in model.named_parameters():
        p.requires_grad_(name.endswith((".A", ".B")))


def step_seconds(model, inputs, dtype, repeats: int) -> float:
    """The fastest of ``repeats`` forward + backward passes under ``dtype`` autocast."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            out = model(inputs)
        out.float().sum().backward()
        best = min(best, time.perf_counter() - start)
    return best


def compare(name: str, model, inputs, repeats: int) -> dict:
    step_seconds(model, inputs, "bfloat16", 1)  # first calls build oneDNN's kernels
    step_seconds(model, inputs, "float32", 1)
    times = {"float32": float("inf"), "bfloat16": float("inf")}
    for _ in range(2):  # taking turns
        for dtype in times:
            times[dtype] = min(times[dtype], step_seconds(model, inputs, dtype, repeats))
    return {"model": name, "float32_s": round(times["float32"], 3),
            "bfloat16_s": round(times["bfloat16"], 3),
            "speedup": round(times["float32"] / times["bfloat16"], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out")
    args = parser.parse_args()
    import timm

    from lorm.backbones import make_backbone
    from lorm.fcil import load_config
    from lorm.precision import cpu_bf16_flags

    rows = []
    for name, size in IMAGES:
        model = timm.create_model(name, pretrained=False, num_classes=100, img_size=size)
        lora_trainable(model, 8, ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"))
        rows.append({**compare(f"{name} ({size}x{size})", model, torch.randn(16, 3, size, size),
                               args.repeats),
                     "auto_picks_bf16": make_backbone(name).cpu_bf16_pays(model)})
    text = make_backbone("minilm")
    model = text.build(load_config("clinc150-beta0.5", ["data_root=unused"]), 150)
    lora_trainable(model, 4, text.default_targets)
    for tokens in TEXT_TOKENS:
        batch = {"input_ids": torch.randint(1000, 2000, (16, tokens)),
                 "attention_mask": torch.ones(16, tokens, dtype=torch.long)}
        rows.append({**compare(f"MiniLM-L6 (16 x {tokens} tokens)", model, batch, args.repeats),
                     "auto_picks_bf16": text.cpu_bf16_pays(model)})
    result = {"command": "python " + " ".join(sys.argv), "threads": torch.get_num_threads(),
              "cpu_bf16_flags": list(cpu_bf16_flags()), "rows": rows}
    lines = ["# bfloat16 autocast vs float32 on CPU: one LoRA training step, batch 16", "",
             f"`{result['command']}`; {result['threads']} threads; native bfloat16: "
             f"{', '.join(result['cpu_bf16_flags']) or 'none'}. Fastest of the repeats, "
             "taking turns.", "",
             "| model | float32 (s) | bfloat16 (s) | speed-up | `amp: auto` picks bf16 |",
             "|---|---:|---:|---:|---|"]
    lines += [f"| {r['model']} | {r['float32_s']} | {r['bfloat16_s']} | {r['speedup']}x | "
              f"{'yes' if r['auto_picks_bf16'] else 'no'} |" for r in rows]
    emit(result, args.out, "amp-cpu", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
