"""The Flower path's cost: per-round overhead against `lorm run`, and server memory
with 100 simulated nodes against 10.

    python benchmarks/bench_flower.py [--repeats 3] [--nodes 10 100] [--blocks 12]
                                      [--simulation] [--out DIR]

- overhead: the digits benchmark (5 clients, 2 tasks x 2 rounds, 1 local epoch,
  1 thread), `lorm run` against `LoRMStrategy` over an in-process grid (LocalGrid: the
  same ClientApp, every message built, encoded into records and decoded, no network),
  taking turns, best of --repeats; per round = wall time / rounds. --simulation adds
  Flower's simulation engine (run_simulation, Ray, 5 nodes), once.
- server memory: N nodes each replying with a ViT-B-sized A-step update (--blocks x 4
  LoRA layers, rank 8, plus a 100-class head; alpha 0, about 3.6 MiB of records per
  reply), received through ReplyStream and added one at a time (ours) against Flower's
  `send_and_receive`, which collects every reply of the round before any is added;
  peak RSS above the baseline, each (way, N) in its own process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _memory import reset_peak, status_mb

RANK, CLASSES = 8, 100
SHAPES = {"attn.qkv": (2304, 768), "attn.proj": (768, 768), "mlp.fc1": (3072, 768),
          "mlp.fc2": (768, 3072)}
DIGITS = ["num_clients=5", "num_tasks=2", "rounds=2", "local_epochs=1", "num_threads=1"]


# -- overhead --------------------------------------------------------------------------------
def time_lorm_run() -> float:
    from lorm.fcil import load_config, run
    start = time.perf_counter()
    run(load_config(None, DIGITS), tempfile.mkdtemp(), quiet=True)
    return time.perf_counter() - start


def time_local_grid() -> float:
    from lorm.fcil import load_config
    from lorm.flower import LoRMStrategy, make_client_app
    from lorm.flower._local_grid import LocalGrid
    start = time.perf_counter()
    LoRMStrategy(load_config(None, DIGITS), tempfile.mkdtemp(), poll=0.0).start(
        LocalGrid(make_client_app(), range(5)))
    return time.perf_counter() - start


def time_simulation() -> float:
    from flwr.simulation import run_simulation

    from lorm.fcil import load_config
    from lorm.flower import make_client_app, make_server_app
    start = time.perf_counter()
    run_simulation(make_server_app(load_config(None, DIGITS), run_dir=tempfile.mkdtemp(),
                                   overwrite=True, poll=0.01),
                   make_client_app(), num_supernodes=5,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    return time.perf_counter() - start


def overhead(repeats: int, simulation: bool) -> dict:
    time_lorm_run()  # imports and first-use costs out of the way
    rows = {"lorm run": [], "flower (LocalGrid)": []}
    for _ in range(repeats):
        rows["lorm run"].append(time_lorm_run())
        rows["flower (LocalGrid)"].append(time_local_grid())
    if simulation:
        rows["flower (run_simulation, Ray)"] = [time_simulation()]
    rounds = 2 * 2
    return {name: {"best_s": min(t), "per_round_s": min(t) / rounds, "all_s": t}
            for name, t in rows.items()}


# -- server memory -------------------------------------------------------------------------
def pool_contents(blocks: int, pool: int = 4):
    """``pool`` distinct ViT-B-sized A-step updates as reply records."""
    from lorm import ClientUpdate, merge
    from lorm.flower.records import update_to_content
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(pool):
        grams = {d: (lambda x: x.T @ x)(torch.randn(64, d, generator=gen)) for d in (768, 3072)}
        layers = {f"blocks.{b}.{n}": merge.a_step_stats(torch.randn(RANK, d, generator=gen), grams[d], 0.0)
                  for b in range(blocks) for n, (o, d) in SHAPES.items()}
        head = merge.full_stats(torch.randn(CLASSES, 768, generator=gen), grams[768], 0.5)
        out.append(update_to_content(ClientUpdate(0, 1, "A", 100, layers=layers, head=head,
                                                  head_bias=torch.randn(CLASSES, generator=gen))))
    return out


def server_memory(way: str, nodes: int, blocks: int) -> dict:
    """Peak RSS of receiving and adding ``nodes`` replies, one way, in this process."""
    from flwr.app import Array, ArrayRecord, Message, RecordDict
    from flwr.clientapp import ClientApp

    from lorm import Aggregator
    from lorm.flower._local_grid import LocalGrid
    from lorm.flower.records import META, UPDATE
    from lorm.flower.replies import ReplyStream
    from lorm.flower.strategy import add_reply

    contents = pool_contents(blocks)
    app = ClientApp()

    @app.train()
    def reply(msg, context):  # a fresh copy of a pooled update, as a reply arrives
        content = contents[context.node_config["partition-id"] % len(contents)]
        arrays = ArrayRecord({k: Array(dtype=a.dtype, shape=a.shape, stype=a.stype,
                                       data=bytes(bytearray(a.data)))
                              for k, a in content[UPDATE].items()})
        return Message(RecordDict({UPDATE: arrays, META: content[META]}), reply_to=msg)

    grid = LocalGrid(app, range(nodes))
    messages = [Message(RecordDict(), n, "train") for n in grid.get_node_ids()]
    aggregator = Aggregator(0, 1, "A")
    base = reset_peak()
    start = time.perf_counter()
    if way == "ours":
        for r in ReplyStream(grid, messages, timeout=600, poll=0.0):
            add_reply(aggregator, r)
    else:
        for r in grid.send_and_receive(messages):
            add_reply(aggregator, r)
    seconds = time.perf_counter() - start
    assert aggregator.num_clients == nodes
    return {"way": way, "nodes": nodes, "seconds": seconds,
            "peak_mb": status_mb("VmHWM") - base,
            "reply_mb": sum(len(a.data) for a in contents[0][UPDATE].values()) / 2**20}


def spawn(way: str, nodes: int, blocks: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", way, str(nodes), str(blocks)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write(out: Path, over: dict, memory: list[dict], blocks: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "flower-cpu.json").write_text(json.dumps({"overhead": over, "memory": memory}, indent=1))
    lines = ["# Flower path (bench_flower.py, CPU)", "",
             "## Per-round time, digits (5 clients, 2 tasks x 2 rounds, 1 local epoch, 1 thread)",
             "", "| path | best run (s) | per round (s) | x lorm run |", "|---|---|---|---|"]
    ref = over["lorm run"]["best_s"]
    for name, row in over.items():
        lines.append(f"| {name} | {row['best_s']:.2f} | {row['per_round_s']:.2f} | "
                     f"{row['best_s'] / ref:.2f} |")
    lines += ["", f"## Server memory, ViT-B-sized A-step replies ({blocks} blocks, rank 8, "
              f"{memory[0]['reply_mb']:.2f} MiB of records each)", "",
              "| way | nodes | peak RSS above baseline (MB) | seconds |", "|---|---|---|---|"]
    for row in memory:
        name = {"ours": "ReplyStream + Aggregator (ours)",
                "collect": "send_and_receive, then add (Flower's default)"}[row["way"]]
        lines.append(f"| {name} | {row['nodes']} | {row['peak_mb']:.0f} | {row['seconds']:.2f} |")
    (out / "flower-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--simulation", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        way, nodes, blocks = args.one
        print(json.dumps(server_memory(way, int(nodes), int(blocks))))
        return
    torch.set_num_threads(1)
    memory = [spawn(way, n, args.blocks) for n in args.nodes for way in ("ours", "collect")]
    over = overhead(args.repeats, args.simulation)
    write(args.out or Path(__file__).parent / "results", over, memory, args.blocks)


if __name__ == "__main__":
    main()
