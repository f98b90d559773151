"""Federated class-incremental accuracy on CLINC150 (fed-mammoth's seq-oos) with the
pretrained MiniLM: lorm, fedavg-lora and regmean-lora beside the reference rows joint
(one client, all data: the centralised upper bound), finetune (one client, tasks in
sequence) and joint-federated (fed-mammoth's joint-oos: lorm over the same Dirichlet
clients, every intent in one task), over seeds and Dirichlet betas, with the paired 95%
t-intervals of LoRM against each.

    python benchmarks/bench_text_fcil.py --data-root ../shared/data/clinc150
        [--protocol full|subsampled|smoke] [--seeds 0,1,2] [--betas 0.5,0.1,0.05]
        [--methods ...] [--work DIR] [--out benchmarks/results] [--set KEY=VALUE ...]

Protocols (PROTOCOLS below; every departure from the preset is listed in
docs/fidelity.md):

- ``full`` (default, results/text-fcil-cpu.md): the clinc150 preset on ALL its data
  (10 tasks x 15 intents, 100 training queries per intent, 10 clients, rank 4) with
  the training budget cut to 1 round x 1 local epoch; one run at a time on 2 threads.
- ``subsampled`` (results/text-fcil-cpu-subsampled.md): 8 training and 5 test queries
  per intent, 5 clients, 2 rounds x 3 epochs, queries cut at 24 tokens; two runs at
  once on one thread each. It cut the data, which hid what the method does.
- ``smoke``: the first 30 intents in 5 tasks.

joint and finetune hold one client, so beta does not change them: they run at the
first beta only. Finished runs in --work are reused, so an interrupted benchmark
continues where it stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _compare_results import write_compare_results

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "python" / "lorm" / "presets" / "clinc150-beta0.5.yaml"
METHODS = ["lorm", "fedavg-lora", "regmean-lora", "joint", "finetune", "joint-federated"]
CPU_PROTOCOL = ["max_train_per_class=8", "max_test_per_class=5", "num_clients=5", "rounds=2",
                "local_epochs=3", "max_length=24", "batch_size=16", "num_threads=1",
                "device=cpu"]
# What fits a shared, loaded 2-core machine in half an hour: the first 30 intents in 5
# tasks of 6; the full 150 intents in 10 tasks need CPU_PROTOCOL or more.
SMOKE_PROTOCOL = ["max_classes=30", "num_tasks=5", "max_train_per_class=8",
                  "max_test_per_class=6", "num_clients=5", "rounds=2", "local_epochs=1",
                  "max_length=16", "batch_size=16", "num_threads=1", "device=cpu"]
# The preset on ALL its data (100 training queries per intent, 10 clients, 64 tokens)
# with the training budget cut to 1 round x 1 local epoch (the preset: 5 x 5), one run at
# a time on 2 threads: about 6 minutes per run on an idle 2-core machine.
# float32 throughout (amp: false), as the runs began before amp: auto took text encoders
# to bfloat16 (same accuracy, benchmarks/results/amp-accuracy-cpu.md)
FULL_PROTOCOL = ["rounds=1", "local_epochs=1", "num_threads=2", "device=cpu", "amp=false"]
PROTOCOLS = {"full": FULL_PROTOCOL, "subsampled": CPU_PROTOCOL, "smoke": SMOKE_PROTOCOL}
JOBS = {"full": 1, "subsampled": 2, "smoke": 2}  # runs at once (each protocol's num_threads)
RESULTS = {"full": "text-fcil-cpu", "subsampled": "text-fcil-cpu-subsampled",
           "smoke": "text-fcil-cpu-smoke"}
REFERENCES = ("joint", "finetune")  # one client: beta does not change them


def main() -> int:
    from lorm.compare import compare, format_report

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True, help="folder holding data_full.json")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--betas", default="0.5,0.1,0.05")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--work", default="runs/bench-text-fcil", help="folder for the runs")
    parser.add_argument("--out", help="write the protocol's results file (.json, .md) here")
    parser.add_argument("--jobs", type=int, help="runs at once (default: the protocol's)")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="full",
                        help="full: all data, 1 round x 1 epoch; subsampled: 8 queries per "
                        "intent; smoke: 30 intents, 5 tasks")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change the protocol")
    args = parser.parse_args()
    jobs = args.jobs or JOBS[args.protocol]
    seeds = [int(s) for s in args.seeds.split(",")]
    betas = [float(b) for b in args.betas.split(",")]
    settings = PROTOCOLS[args.protocol] + [f"data_root={args.data_root}"] + args.set
    start = time.perf_counter()
    methods = args.methods.split(",")
    federated = [m for m in methods if m not in REFERENCES]
    # The reference rows run at the first beta only; the federated rows at every beta,
    # lorm and fedavg-lora first (an interrupted benchmark has the main contrast).
    for group in (federated[:2], federated[2:]):
        if group:
            compare(group, seeds, betas, Path(args.work), str(PRESET), settings, quiet=True,
                    jobs=jobs)
    reports = [compare(methods, seeds, betas[:1], Path(args.work), str(PRESET), settings,
                       quiet=True, jobs=jobs)]
    if federated and betas[1:]:  # joint and finetune alone run at the first beta only
        reports.append(compare(federated, seeds, betas[1:], Path(args.work), str(PRESET),
                               settings, quiet=True, jobs=jobs))
    report = {"by_beta": {}, "protocol": settings[:-1 - len(args.set)] + args.set}
    for part in reports:
        report["by_beta"].update(part["by_beta"])
    text = "\n".join(format_report(part) for part in reports)
    print(text)
    if args.out:
        name = RESULTS[args.protocol]
        write_compare_results(
            args.out, name, "FCIL accuracy on CLINC150 with MiniLM (2-core CPU)", report, text,
            start, f"; protocol: the clinc150 preset with `{' '.join(report['protocol'])}` "
            "(docs/fidelity.md lists each departure from fed-mammoth's seq-oos)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
