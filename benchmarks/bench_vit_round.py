"""One ViT-B/16 client round on CPU at the presets' batch size: CPU time and peak memory.

    python benchmarks/bench_vit_round.py [--preset eurosat-beta0.5] [--samples-per-class 5]
                                         [--out benchmarks/results]

The preset's real architecture (vit_base_patch16_224.augreg_in21k, random weights:
pretrained none; the cost does not depend on the values), batch size 16, 224x224
inputs from a fixture in EuroSAT's real format (tests/dataset_fixtures.py), one client
holding every training image of one task, one local epoch and the preset's statistics
passes. The round is what a client does: local training (AdamW on the LoRA factors
and the head) and the statistics pass(es) that build its update. Reported: CPU time
(process time, all threads: contention by other processes does not inflate it), wall
time per phase, and the peak resident memory above the baseline after the model is
built (VmHWM reset first). Per-sample CPU seconds extrapolate to a preset's client:
e.g. CIFAR-100 at 10 clients holds ~500 images per task, x 5 epochs + passes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _memory import reset_peak, status_mb

ROOT = Path(__file__).resolve().parents[1]


def measure(preset: str, per_class: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from dataset_fixtures import write_eurosat
    from lorm.fcil import load_config
    from lorm.fcil.loop import Run

    work = Path(tempfile.mkdtemp(prefix="bench-vit-"))
    write_eurosat(work / "data", per_class=(per_class, 0, 1))
    config = load_config(preset, [f"data_root={work / 'data'}", "pretrained=none", "num_tasks=1",
                                  "num_clients=1", "min_samples_per_client=1", "local_epochs=1",
                                  "rounds=1"])
    run = Run(config, work / "run", quiet=True)
    run.server.start_task(0)
    samples = len(run.bench.client_indices[0][0])
    base = reset_peak()
    cpu, wall = time.process_time(), time.perf_counter()
    client = run.transport.client
    client.load(run.server.deployed_tensors())
    client.round_update(0, 0, 0)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    phases = {k: round(v, 2) for k, v in run.progress.seconds.items() if v}
    return {"preset": preset, "backbone": config.backbone, "batch_size": config.batch_size,
            "img_size": 224, "stats_passes": config.stats_passes, "rank": config.rank,
            "samples": samples, "torch_threads": torch.get_num_threads(),
            "cpu_seconds": round(cpu, 1), "wall_seconds": round(wall, 1),
            "wall_seconds_by_phase": phases,
            "cpu_seconds_per_sample_epoch_and_pass": round(cpu / (samples * (1 + config.stats_passes)), 3),
            "peak_rss_above_model_mb": round(status_mb("VmHWM") - base, 0),
            "model_rss_mb": round(base, 0), "load_average": os.getloadavg()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="eurosat-beta0.5")
    parser.add_argument("--samples-per-class", type=int, default=5)
    parser.add_argument("--out", help="write vit-round-cpu.json and .md here")
    args = parser.parse_args()
    result = measure(args.preset, args.samples_per_class)
    result["command"] = "python " + " ".join(sys.argv)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        out = Path(args.out)
        (out / "vit-round-cpu.json").write_text(text + "\n")
        (out / "vit-round-cpu.md").write_text(
            "# One ViT-B/16 client round on CPU (train + statistics, batch 16, 224x224)\n\n"
            f"`{result['command']}`\n\n"
            f"- {result['samples']} samples, 1 local epoch, {result['stats_passes']} statistics "
            f"pass(es), rank {result['rank']}, {result['torch_threads']} torch threads\n"
            f"- CPU time {result['cpu_seconds']} s "
            f"({result['cpu_seconds_per_sample_epoch_and_pass']} s per sample per epoch or pass); "
            f"wall {result['wall_seconds']} s by phase {result['wall_seconds_by_phase']} "
            f"(load average {tuple(round(x, 1) for x in result['load_average'])}: the machine was "
            "shared, so the wall time is inflated; the CPU time is not)\n"
            f"- peak memory above the built model: {result['peak_rss_above_model_mb']:.0f} MB "
            f"(model and data: {result['model_rss_mb']:.0f} MB)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
