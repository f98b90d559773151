"""The client's statistics pass on a ViT-B/16-sized model: our collectors vs a forward
with no hooks (the floor) vs the reference way, plus the bytes each round uploads.

    python benchmarks/bench_stats_pass.py [--images 16] [--rank 8] [--device cpu|cuda] [--out DIR]

Model: timm vit_base_patch16_224 with random weights (nothing is downloaded), LoRA
(rank --rank) on all 48 qkv/proj/fc1/fc2 layers, a 100-class head; --images images of
224 px, eval mode, no gradient. The reference way is a forward hook per layer that
computes a full float32 ``x.T @ x`` per batch (keeping only the diagonal for alpha = 0),
as a plain PyTorch RegMean/LoRM client does. Timings are medians over --repeats runs
after a warm-up, measured in the same process on the same inputs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import lorm_ext
from lorm import merge
from lorm.lora import kaiming_uniform
from lorm.messages import ClientUpdate, SolveStats
from lorm.models import build_lora_model
from lorm.stats import StatsCollector


class ReferenceHooks:
    """Full float32 Gram per layer per batch; the diagonal only when asked."""

    def __init__(self, layers, head, diagonal: bool):
        self.grams, self.diagonal = {}, diagonal
        self.handles = [m.register_forward_hook(self.hook(n)) for n, m in layers.items()]
        self.handles.append(head.register_forward_hook(self.hook("head", keep_full=True)))

    def hook(self, name, keep_full=False):
        def fn(module, inputs, output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
            g = x.T @ x
            g = g if keep_full or not self.diagonal else torch.diagonal(g).clone()
            self.grams[name] = g if name not in self.grams else self.grams[name] + g
        return fn

    def remove(self):
        for h in self.handles:
            h.remove()


def timed(fn, device, repeats):
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def upload_bytes(layers, head, rank) -> dict[str, int]:
    """Exact ClientUpdate payload per round kind (float32, shapes only)."""
    def update(factor, layer_stats):
        c = head.out_features
        d_h = head.in_features
        return ClientUpdate(0, 0, factor, 1, layers=layer_stats,
                            head=SolveStats(p=torch.zeros(c, d_h), q=torch.eye(d_h)),
                            head_bias=torch.zeros(c)).payload_nbytes()
    shapes = {n: tuple(l.weight.shape) for n, l in layers.items()}
    meta = lambda *s: torch.empty(*s, device="meta")  # noqa: E731  (shapes only)
    ours = {
        "B-step": update("B", {n: SolveStats(p=meta(o, rank), q=meta(rank, rank))
                               for n, (o, d) in shapes.items()}),
        "A-step alpha=0": update("A", {n: SolveStats(p=meta(rank, d), q=meta(d))
                                       for n, (o, d) in shapes.items()}),
        "A-step alpha=0.5": update("A", {n: SolveStats(p=meta(rank, d), q=meta(d, d))
                                         for n, (o, d) in shapes.items()}),
    }
    return ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    model, layers, head = build_lora_model("vit_base_patch16_224", 100, args.rank,
                                           ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"], seed=0)
    gen = torch.Generator().manual_seed(0)
    for layer in layers.values():
        layer.set_factors(a=kaiming_uniform(tuple(layer.A.shape), gen))
    model = model.to(device).eval()
    x = torch.randn(args.images, 3, 224, 224, generator=gen).to(device)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))

    def forward():
        with torch.no_grad(), autocast:
            model(x)

    def with_ours(mode):
        def fn():
            with StatsCollector(layers, mode, head):
                forward()
        return fn

    def with_reference(diagonal):
        def fn():
            hooks = ReferenceHooks(layers, head, diagonal)
            forward()
            hooks.remove()
        return fn

    floor = timed(forward, device, args.repeats)
    rows = []
    for label, ours_fn, ref_fn in [("A-step alpha=0", with_ours("diag"), with_reference(True)),
                                   ("A-step alpha=0.5", with_ours("full"), with_reference(False)),
                                   ("B-step", with_ours("lowrank"), with_reference(False))]:
        t_ours, t_ref = timed(ours_fn, device, args.repeats), timed(ref_fn, device, args.repeats)
        rows.append(dict(round=label, floor_s=floor, ours_s=t_ours, reference_s=t_ref,
                         ours_overhead_s=t_ours - floor, reference_overhead_s=t_ref - floor,
                         reference_over_ours=t_ref / t_ours))
        print(f"{label:<17} forward {floor:7.3f} s | ours {t_ours:7.3f} s (+{t_ours - floor:6.3f}) | "
              f"reference {t_ref:7.3f} s (+{t_ref - floor:6.3f}) | reference/ours x{t_ref / t_ours:5.2f}",
              flush=True)

    ours_bytes = upload_bytes(layers, head, args.rank)
    state_dict_bytes = sum(t.numel() * 4 for t in model.state_dict().values())
    gram_bytes = 4 * (sum(l.weight.shape[1] ** 2 for l in layers.values()) + head.in_features ** 2)
    naive_bytes = state_dict_bytes + gram_bytes
    print(f"upload per client per round: naive (full float32 Grams + state dict) "
          f"{naive_bytes / 2**20:.1f} MiB")
    for label, b in ours_bytes.items():
        print(f"  ours {label:<17} {b / 2**20:9.3f} MiB  (naive / ours x{naive_bytes / b:8.1f})")

    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        name = f"stats-pass-{args.device}"
        (args.out / f"{name}.json").write_text(json.dumps(dict(
            images=args.images, rank=args.rank, torch=torch.__version__,
            backend=lorm_ext.backend(), rows=rows, naive_upload_bytes=naive_bytes,
            ours_upload_bytes=ours_bytes), indent=1))
        lines = [f"# bench_stats_pass on {args.device}", "",
                 f"vit_base_patch16_224 (random weights), 48 LoRA layers r = {args.rank}, head 100, "
                 f"{args.images} images x 224 px, torch {torch.__version__}, median of "
                 f"{args.repeats} after a warm-up.", "",
                 "| round | forward only (s) | ours (s) | reference (s) | ours overhead (s) | "
                 "reference overhead (s) | reference / ours |", "|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['round']} | {r['floor_s']:.3f} | {r['ours_s']:.3f} | "
                         f"{r['reference_s']:.3f} | {r['ours_overhead_s']:.3f} | "
                         f"{r['reference_overhead_s']:.3f} | {r['reference_over_ours']:.2f} |")
        lines += ["", "Upload per client per round (exact message payload, float32):", "",
                  "| message | MiB | naive / ours |", "|---|---:|---:|",
                  f"| naive: full Grams of 48 layers + head, plus the model state dict | "
                  f"{naive_bytes / 2**20:.1f} | 1 |"]
        for label, b in ours_bytes.items():
            lines.append(f"| ours, {label} | {b / 2**20:.3f} | {naive_bytes / b:.1f} |")
        (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
