"""What secure aggregation costs per round: bytes and seconds per client, the server's
seconds and memory, at 10 and 100 clients with ViT-B-sized LoRA statistics (rank 8,
alpha 0: diagonal Grams for the LoRA layers, the head's full 768 x 768 Gram), against
the same exchange in the clear, side by side in one process.

    python benchmarks/bench_secagg.py [--clients 10,100] [--out benchmarks/results]

Plaintext: each client's update through the wire (float32) into the Aggregator.
Secure aggregation: the four steps of lorm.secagg (keys and shares, masked input,
reveal) with every client simulated here, each step timed on its own side; the server's
time is the Unmasker's and the install's, its memory the peak resident growth while it
runs alone. Aims (issue 30): under 2x the plaintext upload, under 1 s of server time per
round at 100 clients on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import reset_peak, status_mb
from _results import emit
from lorm.aggregate import Aggregator
from lorm.fcil.config import Config
from lorm.fcil.transport import through_wire
from lorm.messages import ClientUpdate, SolveStats
from lorm.secagg.exchange import install
from lorm.secagg.party import MaskingParty
from lorm.secagg.unmasker import Unmasker

# ViT-B/16: 12 blocks x (qkv, proj, fc1: 768 inputs; fc2: 3072), 100 classes
LAYERS = {f"blocks.{b}.{name}": d for b in range(12)
          for name, d in (("attn.qkv", 768), ("attn.proj", 768), ("mlp.fc1", 768), ("mlp.fc2", 3072))}
RANK, CLASSES, WIDTH = 8, 100, 768
NUMBERS = sum(LAYERS.values()) * (RANK + 1) + CLASSES * WIDTH + WIDTH * (WIDTH + 1) // 2 + CLASSES


def vit_b_update(seed: int) -> ClientUpdate:
    g = torch.Generator().manual_seed(seed)
    layers = {name: SolveStats(p=torch.randn(RANK, d, generator=g), q=torch.rand(d, generator=g) + 0.1)
              for name, d in LAYERS.items()}
    x = torch.randn(256, WIDTH, generator=g)
    gram = x.T @ x
    return ClientUpdate(task=0, round=0, factor="A", num_samples=50 + seed, layers=layers,
                        head=SolveStats(p=torch.randn(CLASSES, WIDTH, generator=g) @ gram, q=gram),
                        head_bias=torch.randn(CLASSES, generator=g))


def plaintext(updates: list[ClientUpdate]) -> dict:
    config = Config()
    client, server, sent = 0.0, 0.0, 0
    aggregator = Aggregator(0, 0, "A")
    base = reset_peak()
    for update in updates:
        start = time.perf_counter()
        received, size = through_wire(update, config)
        client += time.perf_counter() - start
        sent += size
        start = time.perf_counter()
        aggregator.add(received)
        server += time.perf_counter() - start
    return {"bytes_per_client": sent / len(updates), "client_s": client / len(updates),
            "server_s": server, "server_peak_mb": status_mb("VmHWM") - base}


def secure(updates: list[ClientUpdate], threshold: float, neighbours: int) -> dict:
    n, tag = len(updates), b"bench"
    timers = {"client": 0.0, "server": 0.0}
    sent = [0] * n

    def client(i, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        timers["client"] += time.perf_counter() - start
        sent[i] += len(out) if isinstance(out, bytes) else 0
        return out

    def server(fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        timers["server"] += time.perf_counter() - start
        return out

    wired = [through_wire(u, Config())[0] for u in updates]
    parties = [client(i, MaskingParty, i, tag, u, threshold, neighbours) for i, u in enumerate(wired)]
    unmasker = Unmasker(tag, torch.float32, threshold, neighbours)
    base = reset_peak()
    rosters = server(unmasker.rosters, {i: client(i, p.advert) for i, p in enumerate(parties)})
    inboxes = server(unmasker.inboxes, {i: client(i, p.share_keys, rosters[i]) for i, p in enumerate(parties)})
    for i, p in enumerate(parties):
        server(unmasker.add_masked, i, client(i, p.masked_input, inboxes[i]))
    requests = server(unmasker.reveal_requests)
    reveals = {i: client(i, p.reveal, requests[i]) for i, p in enumerate(parties)}
    sums, num_clients, samples = server(unmasker.unmask, reveals)
    server(install, Aggregator(0, 0, "A"), sums, num_clients, samples)
    return {"bytes_per_client": sum(sent) / n, "client_s": timers["client"] / n,
            "server_s": timers["server"], "server_peak_mb": status_mb("VmHWM") - base,
            "ring_bits": unmasker.bits, "neighbours": len(unmasker.graph[0])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="10,100")
    parser.add_argument("--threshold", type=float, default=Config.secagg_threshold)
    parser.add_argument("--neighbours", type=int, default=Config.secagg_neighbours)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    load_before = os.getloadavg()[0]
    for n in (int(c) for c in args.clients.split(",")):
        updates = [vit_b_update(i) for i in range(n)]
        plain = plaintext(updates)
        masked = secure(updates, args.threshold, args.neighbours)
        rows.append({"clients": n, "plaintext": plain, "secagg": masked,
                     "upload_ratio": masked["bytes_per_client"] / plain["bytes_per_client"]})
        print(f"{n} clients: {rows[-1]}", file=sys.stderr)
    lines = ["# Secure aggregation's cost per round (ViT-B-sized statistics, rank 8, alpha 0)", "",
             (f"`python benchmarks/bench_secagg.py --clients {args.clients} --out benchmarks/results`; "
              f"{args.threads} threads; secagg_threshold {args.threshold}, secagg_neighbours "
              f"{args.neighbours} (0: all up to 16 clients, then 2 ceil(log2 n)). One A-step update "
              f"per client: {NUMBERS} numbers (diagonal LoRA Grams, the head's full Gram as its "
              f"triangle). Load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
              "(a shared 2-core machine: the plaintext and secagg columns ran back to back)."), "",
             ("| clients | upload per client: clear / secagg (MB) | ratio | client s: clear / secagg | "
              "server s: clear / secagg | server peak MB: clear / secagg | ring bits | neighbours |"),
             "|---:|---|---:|---|---|---|---:|---:|"]
    for r in rows:
        p, s = r["plaintext"], r["secagg"]
        lines.append(f"| {r['clients']} | {p['bytes_per_client'] / 1e6:.2f} / {s['bytes_per_client'] / 1e6:.2f} "
                     f"| {r['upload_ratio']:.2f}x | {p['client_s']:.3f} / {s['client_s']:.3f} | "
                     f"{p['server_s']:.3f} / {s['server_s']:.3f} | {p['server_peak_mb']:.0f} / "
                     f"{s['server_peak_mb']:.0f} | {s['ring_bits']} | {s['neighbours']} |")
    lines += ["", ("Aims (issue 30): upload under 2x the plaintext's, server under 1 s per round at "
              "100 clients. The secagg server does not check each update (clients check their "
              "own; it checks the sum once), which is why it can take less than the plaintext "
              "server, whose per-update checks (curvature probes of the 768 x 768 head Gram) "
              "dominate at 100 clients. The ring grows with the client count (48 -> 56 bits), "
              "the per-client cost with the neighbour count (9 -> 14 masks), not with n.")]
    emit({"rows": rows, "threads": args.threads, "threshold": args.threshold,
          "neighbours": args.neighbours, "load_average": [load_before, os.getloadavg()[0]]}, args.out, "secagg-cpu", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
