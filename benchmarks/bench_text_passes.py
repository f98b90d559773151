"""The passes whose order is free (statistics under ``stats_padding: exclude``, evaluation)
with text queries batched by length (``pass_order: by-length``, the default) against the
seeded shuffle (``shuffled``, lorm before), inside real runs of the clinc150 preset on
the real CLINC150 file, side by side, taking turns. Training is the same in both and
serves as the control for machine load.

    python benchmarks/bench_text_passes.py --data-root ../shared/data/clinc150 \
        [--repeats 1] [--out benchmarks/results]

Protocol: the clinc150-beta0.5 preset on every query of its first 45 intents (3 tasks x
15), 1 round x 1 local epoch, 1 thread per run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _results import emit

ORDERS = ("shuffled", "by-length")
SETTINGS = ["max_classes=45", "num_tasks=3", "rounds=1", "local_epochs=1", "num_threads=1"]


def one_run(data_root: str, order: str, out: Path) -> dict:
    from lorm.fcil import load_config, run

    config = load_config("clinc150-beta0.5", [f"data_root={data_root}", f"pass_order={order}",
                                              *SETTINGS])
    summary = run(config, out, quiet=True)
    return {"seconds": {k: round(v, 1) for k, v in summary["seconds"].items()},
            "faa": summary["final_average_accuracy"], "last_row": summary["accuracy_matrix"][-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True, help="folder holding data_full.json")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    if not (Path(args.data_root) / "data_full.json").is_file():
        print(f"no data_full.json in {args.data_root}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-text-passes-"))
    runs = {order: [] for order in ORDERS}
    for k in range(args.repeats):
        for order in ORDERS:
            runs[order].append(one_run(args.data_root, order, work / f"{order}-{k}"))
    best = {order: {phase: min(r["seconds"][phase] for r in rs) for phase in rs[0]["seconds"]}
            for order, rs in runs.items()}
    result = {"command": "python " + " ".join(sys.argv), "settings": SETTINGS, "runs": runs,
              "best_seconds": best}
    old, new = best["shuffled"], best["by-length"]
    lines = ["# Text passes batched by length vs shuffled, inside real CLINC150 runs", "",
             f"`{result['command']}`", "",
             "clinc150-beta0.5 preset, first 45 intents (3 tasks x 15), all their queries, "
             "1 round x 1 epoch, 1 thread; best of the repeats, taking turns. Training is "
             "the same computation in both (the control).", "",
             "| phase | shuffled (s) | by length (s) | speed-up |", "|---|---:|---:|---:|"]
    for phase in ("train", "stats", "eval"):
        lines.append(f"| {phase} | {old[phase]} | {new[phase]} | "
                     f"{old[phase] / max(new[phase], 1e-9):.2f}x |")
    faa = {o: [round(100 * r['faa'], 2) for r in rs] for o, rs in runs.items()}
    lines += ["", f"FAA (%): shuffled {faa['shuffled']}, by length {faa['by-length']} "
              "(the same counts up to float32 rounding of the sums)."]
    emit(result, args.out, "text-passes-cpu", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
