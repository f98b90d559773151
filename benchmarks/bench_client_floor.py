"""One client round against its floor: the Client's local training and statistics pass
beside a bare loop over the same batches (forward + backward + AdamW step of the same
LoRA model; a bare forward for the pass), taking turns, in one process.

    python benchmarks/bench_client_floor.py [--repeats 3] [--out benchmarks/results]

Cases: the eurosat-beta0.5 preset's ViT-B/16 (random weights, 224x224, 32 images) and
the clinc150-beta0.5 preset's MiniLM (64 made-up queries), each at its preset's batch
size (16) and the precision ``amp: auto`` picks here. What the round adds to the floor
is lorm's own cost: the data path (loader, collation, transforms), the LoRA factor
switching and the optimizer set-up per round, the statistics hooks.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _results import emit

ROOT = Path(__file__).resolve().parents[1]


def build(case: str, work: Path, amp: str):
    sys.path.insert(0, str(ROOT / "tests"))
    from dataset_fixtures import fake_clinc, write_eurosat
    from lorm.fcil import load_config
    from lorm.fcil.loop import Run

    data = work / f"{case}-{amp}"
    data.mkdir(parents=True)
    if case == "vit-b16":
        write_eurosat(data, per_class=(16, 0, 1))
        preset, extra = "eurosat-beta0.5", ["pretrained=none", "max_classes=2"]
    else:
        fake_clinc(data / "data_full.json")
        preset, extra = "clinc150-beta0.5", ["max_classes=2", "max_train_per_class=32",
                                             "max_test_per_class=2"]
    config = load_config(preset, [f"data_root={data}", "num_tasks=1", "num_clients=1",
                                  "min_samples_per_client=1", "local_epochs=1", "rounds=1",
                                  "num_threads=2", f"amp={amp}", *extra])
    run = Run(config, work / f"{case}-{amp}-run", quiet=True)
    run.server.start_task(0)
    return run


def client_round(run) -> dict[str, float]:
    """The Client's round (train + the B-step statistics pass), seconds by phase."""
    client = run.transport.client
    before = dict(run.clock.seconds)
    client.load(run.server.deployed_tensors())
    client.round_update(0, 0, 0)
    return {p: run.clock.seconds[p] - before[p] for p in ("train", "stats")}


def floor(run, batches, pass_batches) -> dict[str, float]:
    """Bare loops over pre-collated batches: forward + backward + AdamW step of a copy of
    the client's model (B and the head trainable) over ``batches``, then bare forwards
    over ``pass_batches``, as many passes as the config's ``stats_passes``."""
    from lorm.precision import autocast

    client, fed = run.transport.client, run.federation
    model = copy.deepcopy(client.model)
    layers = {n: model.get_submodule(n) for n in client.layers}
    for p in model.parameters():
        p.requires_grad_(False)
    params = [l.B for l in layers.values()] + list(model.head.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    classes = torch.tensor(run.bench.task_classes[0])
    model.train()
    start = time.perf_counter()
    for x, y in batches:
        with autocast(fed.device, fed.amp):
            logits = model(x)[:, classes]
        loss = F.cross_entropy(logits.float(), y % len(classes))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    train = time.perf_counter() - start
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(run.config.stats_passes):
            for x, _ in pass_batches:
                with autocast(fed.device, fed.amp):
                    model(x)
    return {"train": train, "stats": time.perf_counter() - start}


def measure(case: str, repeats: int, work: Path, amp: str) -> dict:
    from lorm.fcil.randomness import make_loader
    from lorm.precision import describe

    run = build(case, work, amp)
    indices, seed, backbone = run.bench.client_indices[0][0], run.config.seed, run.federation.backbone
    # the client's own batches: its training loader's and its statistics loader's
    train = make_loader(run.bench.train, indices, run.config.batch_size, [seed, 0, 0, 0])
    stats = run.transport.client.statistics_loader(indices, [seed, 0, 0, 0, 1])
    batches = [(backbone.to_device(x, run.device), y) for x, y in train]
    pass_batches = [(backbone.to_device(x, run.device), y) for x, y in stats]
    client_round(run), floor(run, batches, pass_batches)  # warm-up (oneDNN kernels, allocations)
    ours = {"train": float("inf"), "stats": float("inf")}
    bare = dict(ours)
    for _ in range(repeats):
        for phase, t in client_round(run).items():
            ours[phase] = min(ours[phase], t)
        for phase, t in floor(run, batches, pass_batches).items():
            bare[phase] = min(bare[phase], t)
    return {"case": case, "backbone": run.config.backbone, "samples": len(indices),
            "stats_passes": run.config.stats_passes,
            "batch_size": run.config.batch_size, "amp": describe(run.federation.amp),
            "client_s": {k: round(v, 3) for k, v in ours.items()},
            "floor_s": {k: round(v, 3) for k, v in bare.items()},
            "ratio": {k: round(ours[k] / bare[k], 3) for k in ours}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default="vit-b16,minilm")
    parser.add_argument("--amp", default="auto", help="comma-separated amp settings to run "
                        "(e.g. auto,false: the statistics hooks on bfloat16 vs float32 rows)")
    parser.add_argument("--out")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    rows = [measure(case, args.repeats, work, amp) for amp in args.amp.split(",")
            for case in args.cases.split(",")]
    result = {"command": "python " + " ".join(sys.argv), "threads": torch.get_num_threads(),
              "rows": rows}
    lines = ["# One client round against its floor (same batches, same model)", "",
             f"`{result['command']}`; {result['threads']} threads; best of the repeats, "
             "taking turns, after a warm-up.", "",
             "| model | samples | precision | train: client / bare fwd+bwd+step (s) | ratio "
             "| statistics passes: client / bare forwards (s) | ratio |",
             "|---|---:|---|---|---:|---|---:|"]
    for r in rows:
        c, f, q = r["client_s"], r["floor_s"], r["ratio"]
        lines.append(f"| {r['backbone']} | {r['samples']} | {r['amp']} | {c['train']} / "
                     f"{f['train']} | {q['train']}x | {c['stats']} / {f['stats']} "
                     f"({r['stats_passes']} pass(es)) | {q['stats']}x |")
    emit(result, args.out, "client-floor-cpu", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
