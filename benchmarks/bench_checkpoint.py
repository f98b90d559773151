"""Bytes a run writes per checkpoint: per round and per task end, now (a round part
rewritten every save, a task part only at a task's end) against the one-file
checkpoint lorm wrote before (the whole state at every save), side by side in one run.

    python benchmarks/bench_checkpoint.py [--out benchmarks/results]

Two real runs of 2 tasks x 2 rounds on fixtures in the datasets' real formats
(tests/dataset_fixtures.py): the eurosat-beta0.5 preset's ViT-B/16 (random weights:
sizes do not depend on values) with rank 8, and the clinc150-beta0.5 preset's MiniLM
(rank 4, the preset's). The one-file size is the sum of the state's tensor bytes at the
same save (its header of a few KB left out). Also timed: the seconds each save took.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _results import emit

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {
    "vit-b16-r8": ("eurosat-beta0.5", ["rank=8", "pretrained=none", "max_classes=4"]),
    "minilm-r4": ("clinc150-beta0.5", ["max_classes=4", "max_train_per_class=4",
                                       "max_test_per_class=2", "max_length=16"]),
}
COMMON = ["num_tasks=2", "rounds=2", "local_epochs=1", "num_clients=1",
          "min_samples_per_client=1", "num_threads=2"]


def measure(family: str) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from dataset_fixtures import fake_clinc, write_eurosat
    from lorm.fcil import checkpoint, load_config, run
    from lorm.fcil.loop import Run

    preset, extra = FAMILIES[family]
    work = Path(tempfile.mkdtemp(prefix="bench-ckpt-"))
    if preset.startswith("clinc"):
        (work / "data").mkdir(parents=True)
        fake_clinc(work / "data" / "data_full.json")
    else:
        write_eurosat(work / "data", per_class=(1, 0, 1))
    config = load_config(preset, [f"data_root={work / 'data'}", *COMMON, *extra])
    saves: list[dict] = []
    written: list[int] = []
    write, save = checkpoint._write_atomically, Run.save

    def counting_write(path, data):
        written.append(len(data))
        write(path, data)

    def timed_save(self, task_changed=False):
        written.clear()
        one_file = sum(t.numel() * t.element_size() for t in self.server.tensors().values())
        start = time.perf_counter()
        save(self, task_changed)
        saves.append({"kind": "task end" if task_changed else "round",
                      "bytes": sum(written), "one_file_bytes": one_file,
                      "seconds": round(time.perf_counter() - start, 3)})

    checkpoint._write_atomically, Run.save = counting_write, timed_save
    try:
        run(config, work / "run", quiet=True)
    finally:
        checkpoint._write_atomically, Run.save = write, save
    saves[0]["kind"] = "start"
    by_kind = {}
    for kind in ("round", "task end"):
        rows = [s for s in saves if s["kind"] == kind]
        by_kind[kind] = {"saves": len(rows),
                         "mb_written": round(max(s["bytes"] for s in rows) / 2**20, 2),
                         "mb_one_file": round(max(s["one_file_bytes"] for s in rows) / 2**20, 2),
                         "seconds": round(max(s["seconds"] for s in rows), 3)}
    total = sum(s["bytes"] for s in saves)
    total_one_file = sum(s["one_file_bytes"] for s in saves)
    return {"family": family, "preset": preset, "backbone": config.backbone, "rank": config.rank,
            "alpha_backbone": config.alpha_backbone, "by_kind": by_kind,
            "run_mb_written": round(total / 2**20, 1),
            "run_mb_one_file": round(total_one_file / 2**20, 1), "saves": saves}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--out", help="write checkpoint-cpu.json and .md here")
    args = parser.parse_args()
    results = [measure(f) for f in args.families.split(",")]
    command = "python " + " ".join(sys.argv)
    lines = ["# Checkpoint bytes per save: parts (now) vs one file (before)", "",
             f"`{command}`", "",
             "Each run: 2 tasks x 2 rounds, fixtures in the datasets' real formats. "
             "'now': bytes written by the save (round part; plus the task part at a "
             "task's end); 'one file': the whole state's tensor bytes at the same save "
             "(what every save wrote before). Largest save of each kind.", "",
             "| model | save | now (MB) | one file (MB) | ratio | save time (s) |",
             "|---|---|---:|---:|---:|---:|"]
    for r in results:
        for kind, row in r["by_kind"].items():
            ratio = row["mb_one_file"] / max(row["mb_written"], 1e-9)
            lines.append(f"| {r['backbone']} r={r['rank']} | {kind} | {row['mb_written']} | "
                         f"{row['mb_one_file']} | {ratio:.0f}x | {row['seconds']} |")
        lines.append(f"| {r['backbone']} r={r['rank']} | whole run ({len(r['saves'])} saves) | "
                     f"{r['run_mb_written']} | {r['run_mb_one_file']} | "
                     f"{r['run_mb_one_file'] / max(r['run_mb_written'], 1e-9):.1f}x | |")
    emit({"command": command, "results": results}, args.out, "checkpoint-cpu", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
