"""The digits app in Flower's simulation engine (Ray), 5 nodes, from Python:

    python examples/flower-digits/simulate.py [--nodes 5] [--output runs/flower-digits]
        [--set key=value ...]

The same ServerApp and ClientApp as `flwr run` (lorm.flower), the same settings as
this folder's pyproject.toml; prints the accuracy matrix and FAA of summary.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flwr.simulation import run_simulation

from lorm.fcil import load_config
from lorm.flower import make_client_app, make_server_app

DEFAULTS = ["num_clients=5", "num_tasks=5", "rounds=4", "num_threads=1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--output", type=Path, default=Path("runs/flower-digits"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    config = load_config(None, DEFAULTS + [f"num_clients={args.nodes}"] + args.set)
    server = make_server_app(config, run_dir=args.output, overwrite=True)
    run_simulation(server_app=server, client_app=make_client_app(), num_supernodes=args.nodes,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    summary = json.loads((args.output / "summary.json").read_text())
    for t, row in enumerate(summary["accuracy_matrix"]):
        print(f"after task {t}: " + " ".join(f"{100 * a:5.1f}" for a in row))
    print(f"final average accuracy {100 * summary['final_average_accuracy']:.1f}%")


if __name__ == "__main__":
    main()
