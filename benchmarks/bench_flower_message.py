"""What one Flower deployment message costs a node: Flower 1.42 starts a fresh
ClientApp process per message, which pays Python's and lorm's imports, the node's
set-up and then the step. Set-up before the Server/Client/Transport split: a whole
``Run`` (data, a server model and a client copy, merger, run directory, torchrun
check); after: ``lorm.flower.node.node_client`` (data and one model). Both measured
side by side in fresh processes, taking turns.

    python benchmarks/bench_flower_message.py [--repeats 3] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import emit

ROOT = Path(__file__).resolve().parents[1]
CASES = {  # name -> lorm config overrides (and a fixture to write)
    "digits (tiny ViT)": ["num_clients=3", "num_tasks=2", "max_classes=4",
                          "max_train_per_class=30", "max_test_per_class=20", "rounds=2",
                          "local_epochs=1", "batch_size=8", "num_threads=1"],
    "clinc150 fixture (MiniLM)": ["--config", "clinc150-beta0.5", "num_tasks=2", "max_classes=4",
                                  "max_train_per_class=6", "max_test_per_class=2",
                                  "num_clients=2", "rounds=1", "local_epochs=1",
                                  "min_samples_per_client=1", "max_length=16", "num_threads=1"],
}

# One message in a fresh process: imports, set-up, then one client round from the
# deployed state; prints the three times as JSON.
CHILD = r"""
import json, sys, tempfile, time
t0 = time.perf_counter()
from lorm.fcil import load_config
from lorm.fcil.loop import Run
from lorm.flower import node
t1 = time.perf_counter()
preset, overrides, how = json.loads(sys.argv[1])
config = load_config(preset, overrides)
if how == "before":
    run = Run(config, tempfile.mkdtemp(), quiet=True)   # what a node built before
    client, state = run.transport.client, run.server.deployed_tensors()
else:
    client = node.node_client(json.dumps(config.to_dict(), sort_keys=True))
    server = Run(config, tempfile.mkdtemp(), quiet=True).server  # the server's side, not timed
t2 = time.perf_counter()
if how != "before":
    state = server.deployed_tensors()
    t2b = time.perf_counter()
client.load(state)
client.round_update(0, 0, 0)
t3 = time.perf_counter()
setup = t2 - t1
step = t3 - (t2b if how != "before" else t2)
print(json.dumps({"imports": t1 - t0, "setup": setup, "step": step}))
"""


def one(preset: str | None, overrides: list[str], how: str) -> dict:
    env_path = f"{ROOT / 'python'}:{ROOT}"
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps([preset, overrides, how])],
                         capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from dataset_fixtures import fake_clinc

    data = Path(tempfile.mkdtemp(prefix="bench-msg-"))
    fake_clinc(data / "data_full.json")
    results = {}
    for name, case in CASES.items():
        preset = case[1] if case[0] == "--config" else None
        overrides = (case[2:] if preset else case) + (
            [f"data_root={data}"] if preset else [])
        rows = {"before": [], "after": []}
        for _ in range(args.repeats):
            for how in rows:
                rows[how].append(one(preset, overrides, how))
        results[name] = {how: {k: round(statistics.median(r[k] for r in runs), 2)
                               for k in ("imports", "setup", "step")}
                         for how, runs in rows.items()}
    command = "python " + " ".join(sys.argv)
    lines = ["# One Flower deployment message on a node: imports + set-up + step", "",
             f"`{command}` (median of {args.repeats} fresh processes each, taking turns)", "",
             "| case | node set-up | imports (s) | set-up (s) | one client round (s) | total (s) |",
             "|---|---|---:|---:|---:|---:|"]
    for name, by_how in results.items():
        for how, r in by_how.items():
            label = "whole Run (before)" if how == "before" else "Client only (now)"
            lines.append(f"| {name} | {label} | {r['imports']} | {r['setup']} | {r['step']} | "
                         f"{r['imports'] + r['setup'] + r['step']:.2f} |")
    emit({"command": command, "repeats": args.repeats, "results": results}, args.out, "flower-message-cpu", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
