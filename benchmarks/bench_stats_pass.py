"""The client's statistics pass on a ViT-B/16-sized model: our collectors vs a forward
with no hooks (the floor) vs the reference way, plus the bytes each round uploads.

    python benchmarks/bench_stats_pass.py [--images 16] [--rank 8] [--device cpu|cuda] [--out DIR]

Model: timm vit_base_patch16_224 with random weights (nothing is downloaded), LoRA
(rank --rank) on all 48 qkv/proj/fc1/fc2 layers, a 100-class head; --images images of
224 px, eval mode, no gradient. The reference way is a forward hook per layer that
computes a full float32 ``x.T @ x`` per batch (keeping only the diagonal for alpha = 0),
as a plain PyTorch RegMean/LoRM client does. Timings are taken over --repeats runs
after a warm-up, every variant once per repeat in turn, in the same process on
the same inputs; each is the best of its repeats, ratios are ratios of those bests.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import lorm_ext
from lorm.lora import kaiming_uniform
from lorm.messages import ClientUpdate, SolveStats
from lorm.backbones.timm_vit import build_lora_model
from lorm.stats import StatsCollector

from _hook_clock import HookClock


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


def timed_in_turn(fns: dict, device, repeats: int) -> dict[str, list[float]]:
    """Seconds of each function per repeat; within a repeat the functions run one after
    the other, so a slow spell of the machine lands on neighbours alike."""
    def once(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for fn in fns.values():
        fn()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(once(fn))
    return times


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
    parser.add_argument("--repeats", type=int, default=5)
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

    in_hooks = {}  # mode -> seconds spent inside the collector's hooks, per run

    def with_ours(mode):
        def fn():
            with HookClock(list(layers.values()) + [head]) as clock:
                with StatsCollector(layers, mode, head):
                    clock.arm()
                    forward()
            in_hooks.setdefault(mode, []).append(clock.seconds)
        return fn

    def with_reference(diagonal):
        def fn():
            hooks = ReferenceHooks(layers, head, diagonal)
            forward()
            hooks.remove()
        return fn

    cases = [("A-step alpha=0", with_ours("diag"), with_reference(True)),
             ("A-step alpha=0.5", with_ours("full"), with_reference(False)),
             ("B-step", with_ours("lowrank"), with_reference(False))]
    fns = {"forward": forward}
    for label, ours_fn, ref_fn in cases:
        fns[f"ours {label}"], fns[f"reference {label}"] = ours_fn, ref_fn
    times = timed_in_turn(fns, device, args.repeats)
    best = {name: min(t) for name, t in times.items()}  # the machine's noise only adds
    floor = best["forward"]
    rows = []
    for label, _, _ in cases:
        t_ours, t_ref = best[f"ours {label}"], best[f"reference {label}"]
        mode = {"A-step alpha=0": "diag", "A-step alpha=0.5": "full", "B-step": "lowrank"}[label]
        hooks = [h for h in in_hooks[mode][1:]]  # the warm-up run left out
        hook_ratio = min(1 + h / (t - h) for h, t in zip(hooks, times[f"ours {label}"]))
        rows.append(dict(round=label, floor_s=floor, ours_s=t_ours, reference_s=t_ref,
                         hook_s=min(hooks), ours_over_own_forward=hook_ratio,
                         ours_over_forward=t_ours / floor, reference_over_forward=t_ref / floor,
                         reference_over_ours=t_ref / t_ours, all_s=dict(forward=times["forward"],
                         ours=times[f"ours {label}"], reference=times[f"reference {label}"])))
        ours_ratio, ref_ratio = t_ours / floor, t_ref / floor
        print(f"{label:<17} forward {floor:7.3f} s | ours {t_ours:7.3f} s (x{ours_ratio:5.3f} forward; "
              f"in hooks {min(hooks):.3f} s = x{hook_ratio:5.3f} its own forward) | "
              f"reference {t_ref:7.3f} s (x{ref_ratio:5.3f}) | reference/ours x{rows[-1]['reference_over_ours']:5.2f}",
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
                 f"{args.images} images x 224 px, torch {torch.__version__}, {args.repeats} repeats "
                 "after a warm-up, every variant once per repeat in turn; best of the repeats (noise only "
                 "adds), ratios of those bests.", "",
                 "Ours / own forward: (time of the run) / (that time less the time inside our hooks), "
                 "the best run: the collectors' cost measured within one run, immune to drift between runs.", "",
                 "| round | forward only (s) | ours (s) | reference (s) | ours / forward | "
                 "in our hooks (s) | ours / own forward | reference / forward | reference / ours |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['round']} | {r['floor_s']:.3f} | {r['ours_s']:.3f} | "
                         f"{r['reference_s']:.3f} | {r['ours_over_forward']:.3f} | "
                         f"{r['hook_s']:.3f} | {r['ours_over_own_forward']:.3f} | "
                         f"{r['reference_over_forward']:.3f} | {r['reference_over_ours']:.2f} |")
        lines += ["", "Upload per client per round (exact message payload, float32):", "",
                  "| message | MiB | naive / ours |", "|---|---:|---:|",
                  f"| naive: full Grams of 48 layers + head, plus the model state dict | "
                  f"{naive_bytes / 2**20:.1f} | 1 |"]
        for label, b in ours_bytes.items():
            lines.append(f"| ours, {label} | {b / 2**20:.3f} | {naive_bytes / b:.1f} |")
        (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
