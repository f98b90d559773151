"""The ``lorm`` command (also ``python -m lorm``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

DEMO_METHODS = ("lorm", "fedavg-lora")
# The Config defaults are the digits benchmark; the tiny model's ops are too small to
# gain from more than one thread.
DEMO_SETTINGS = ["num_threads=1"]


def default_output() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def _table(rows: list[tuple[str, dict, float]]) -> str:
    header = (f"{'method':<14} {'final avg acc':>13} {'avg inc acc':>11} {'forgetting':>10} "
              f"{'KB/client/round':>15} {'seconds':>8}")
    lines = [header, "-" * len(header)]
    for name, s, seconds in rows:
        lines.append(f"{name:<14} {100 * s['final_average_accuracy']:>12.2f}% "
                     f"{100 * s['average_incremental_accuracy']:>10.2f}% "
                     f"{100 * s['forgetting']:>9.2f}% "
                     f"{s['bytes_per_client_per_round'] / 1024:>15.1f} {seconds:>8.1f}")
    return "\n".join(lines)


def cmd_demo(args) -> int:
    from .fcil import load_config, run

    output = Path(args.output or default_output())
    rows = []
    for method in DEMO_METHODS:
        config = load_config(None, DEMO_SETTINGS + [f"method={method}", f"seed={args.seed}"]
                             + (args.set or []))
        start = time.perf_counter()
        summary = run(config, output / method, quiet=args.quiet)
        rows.append((method, summary, time.perf_counter() - start))
    print(f"\nEmbedded digits benchmark (5 tasks x 2 classes, 5 clients, Dirichlet beta 0.5, "
          f"tiny ViT, seed {args.seed}); runs in {output}\n")
    print(_table(rows))
    return 0


def cmd_run(args) -> int:
    from .distributed import launched_by_torchrun
    from .fcil import load_config, run
    from .fcil.loop import RESUME_SETTABLE, resume

    if launched_by_torchrun() and not (args.output or args.resume):
        raise ValueError("under torchrun every rank must name the same run directory: "
                         "pass --output DIR (or --resume DIR)")
    if args.resume:
        fixed = [flag for flag, given in (("--config", args.config), ("--output", args.output),
                                          ("--download", args.download),
                                          ("--overwrite", args.overwrite)) if given]
        if fixed:
            raise ValueError(f"--resume continues a run as it was configured: drop "
                             f"{', '.join(fixed)} (--set may change only "
                             f"{', '.join(RESUME_SETTABLE)})")
        summary = resume(args.resume, quiet=args.quiet, overrides=args.set)
        output = Path(args.resume)
    else:
        config = load_config(args.config, (args.set or []) + (["download=true"] if args.download
                                                               else []))
        output = Path(args.output or default_output())
        summary = run(config, output, quiet=args.quiet, overwrite=args.overwrite)
    from .distributed import launched_by_torchrun as distributed
    if not distributed() or int(os.environ.get("RANK", "0")) == 0:
        print(_table([(summary["config"]["method"], summary, sum(summary["seconds"].values()))]))
        print(f"\nrun directory: {output}")
    return 0


def cmd_report(args) -> int:
    run_dir = Path(args.run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        print(f"error: {summary_path} not found: not a finished lorm run directory", file=sys.stderr)
        return 2
    summary = json.loads(summary_path.read_text())
    print(_table([(summary["config"]["method"], summary, sum(summary["seconds"].values()))]))
    print("\naccuracy matrix (%, row = after task, column = task evaluated):")
    for t, row in enumerate(summary["accuracy_matrix"]):
        print(f"  task {t}: " + " ".join(f"{100 * a:6.1f}" for a in row))
    print("\nseconds per phase: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["seconds"].items()))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lorm", description="LoRM: closed-form merging of LoRA "
                                "modules for federated class-incremental learning.")
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="lorm vs fedavg-lora on the embedded digits data "
                          "(no download, about a minute on 2 CPU cores)")
    demo.add_argument("--output", help="run directory (default: runs/<timestamp>)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="override a config field for both methods (repeatable)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="run a config (YAML preset, see configs/); under "
                         "`torchrun --nproc_per_node=P -m lorm run ...` the clients of every "
                         "round are sharded over the P ranks")
    run.add_argument("--config", help="YAML preset (default: the embedded digits benchmark)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a config field, YAML syntax (repeatable)")
    run.add_argument("--output", help="run directory (default: runs/<timestamp>)")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue RUN_DIR after its last whole checkpoint (exactly as if "
                     "uninterrupted); only --set num_threads/dist_timeout may go with it")
    run.add_argument("--overwrite", action="store_true",
                     help="replace what --output DIR holds (only once the new run has started "
                     "cleanly); without it a non-empty DIR is refused")
    run.add_argument("--download", action="store_true",
                     help="let torchvision download CIFAR-100 into data_root (needs internet); "
                     "without it nothing is ever downloaded")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=cmd_run)

    report = sub.add_parser("report", help="print a finished run's summary")
    report.add_argument("run_dir")
    report.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    from .distributed import shutdown

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError) as exc:  # expected: config, data, weights, checkpoints, dirs
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown()


if __name__ == "__main__":
    sys.exit(main())
