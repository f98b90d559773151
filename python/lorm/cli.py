"""The ``lorm`` command (also ``python -m lorm``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

# The demo's protocol, by a rule fixed before its answer was looked at
# (benchmarks/results/demo-cpu.md): within the 9-10 runs the demo's time allows, the
# most paired seeds for its one question, LoRM vs FedAvg-LoRA. The 3-seed demo's paired
# spread (4.8 pp) gives 5 seeds an expected 95% half-width of 6.0 pp against its 9.7 pp
# gap; RegMean-LoRA is in `lorm compare` and the benchmarks.
DEMO_METHODS = ("lorm", "fedavg-lora")
DEMO_SEEDS = "0,1,2,3,4"
# Strong label skew: where merging by the clients' statistics matters most (5 seeds:
# LoRM - FedAvg-LoRA +9.5 pp at beta 0.1, +4.5 at 0.5; benchmarks/results/fcil-cpu.md).
DEMO_BETAS = "0.1"
# The Config defaults are the digits benchmark; the tiny model's ops are too small to
# gain from more than one thread.
DEMO_SETTINGS = ["num_threads=1"]


def default_output() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def _table(rows: list[tuple[str, dict, float]]) -> str:
    from .fcil.metrics import just_learned_accuracy

    header = (f"{'method':<14} {'final avg acc':>13} {'just learned':>12} {'avg inc acc':>11} "
              f"{'forgetting':>10} "
              f"{'forg. (f-m)':>11} {'KB/client/round':>15} {'seconds':>8}")
    lines = [header, "-" * len(header)]
    for name, s, seconds in rows:
        fed_mammoth = s.get("forgetting_fed_mammoth", float("nan"))
        learned = just_learned_accuracy(s["accuracy_matrix"])
        lines.append(f"{name:<14} {100 * s['final_average_accuracy']:>12.2f}% {100 * learned:>11.2f}% "
                     f"{100 * s['average_incremental_accuracy']:>10.2f}% "
                     f"{100 * s['forgetting']:>9.2f}% {100 * fed_mammoth:>10.2f}% "
                     f"{s['bytes_per_client_per_round'] / 1024:>15.1f} {seconds:>8.1f}")
    return "\n".join(lines)


def _numbers(text: str, kind, what: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{what} takes a comma-separated list, got {text!r}") from None
    if not values:
        raise ValueError(f"--{what} is empty")
    return values


def _compare(args, methods: list[str], config: str | None, settings: list[str]) -> dict:
    from .compare import compare, format_report

    output = Path(args.output or default_output())
    report = compare(methods, _numbers(args.seeds, int, "seeds"),
                     _numbers(args.betas, float, "betas") if args.betas else [None],
                     output, config, settings, quiet=args.quiet, jobs=args.jobs)
    print()
    print(format_report(report))
    print(f"runs, compare.json and compare.png in {output}")
    return report


def demo_verdict(report: dict) -> list[str]:
    """One line per beta on what LoRM vs FedAvg-LoRA's paired interval means, read
    from the numbers (an interval containing 0 is reported as such)."""
    lines = []
    for beta, block in report["by_beta"].items():
        d = block["faa_difference"].get("fedavg-lora")
        if d is None:
            continue
        if d["low"] is None:
            lines.append(f"beta {beta}: one seed gives no interval; nothing can be concluded.")
            continue
        interval = f"{100 * d['mean']:+.1f} pp, 95% CI [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
        if d["significant"]:
            side = "above" if d["mean"] > 0 else "below"
            lines.append(f"beta {beta}: LoRM's final accuracy is {side} FedAvg-LoRA's ({interval}); "
                         f"the interval excludes 0, so on these {d['seeds']} seeds the gap is "
                         "more than seed-to-seed noise.")
        else:
            lines.append(f"beta {beta}: LoRM vs FedAvg-LoRA {interval}; the interval contains 0, "
                         f"so these {d['seeds']} seeds cannot tell the two apart.")
    return lines


def cmd_demo(args) -> int:
    from .optional import import_vision

    # before any run starts: the tiny ViT is timm's VisionTransformer (the 'vision' extra)
    import_vision("timm", "lorm demo (its tiny ViT is a timm VisionTransformer)")
    print(f"Embedded digits benchmark: 5 tasks x 2 classes, 5 clients with label-skewed data "
          f"(Dirichlet beta {args.betas}: smaller is more skewed), tiny ViT pretrained on "
          f"Fashion-MNIST (shipped); methods {', '.join(DEMO_METHODS)}, seeds {args.seeds}, "
          f"{args.jobs} run(s) at once. About 1.5 minutes on 2 CPU cores (a few on slower ones).")
    report = _compare(args, list(DEMO_METHODS), None, DEMO_SETTINGS + (args.set or []))
    print("\n".join(demo_verdict(report)))
    print("RegMean-LoRA, more seeds and betas: `lorm compare --methods "
          "lorm,fedavg-lora,regmean-lora --seeds 0,1,2,3,4 --betas 0.5,0.1,0.05` "
          "(benchmarks/bench_fcil.py; results in benchmarks/results/fcil-cpu.md).")
    return 0


def cmd_compare(args) -> int:
    _compare(args, _numbers(args.methods, str, "methods"), args.config, args.set or [])
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


def cmd_presets(args) -> int:
    from .presets import description, preset_names

    names = preset_names()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {description(name)}")
    print("\nlorm run --config NAME --set data_root=<folder>   (layouts: docs/datasets.md)")
    return 0


def cmd_info(args) -> int:
    import lorm_ext
    import torch

    from .precision import cpu_bf16_flags

    flags = cpu_bf16_flags()
    print(f"lorm_ext: {lorm_ext.load_message()}")
    print(f"torch {torch.__version__}; CUDA devices: "
          f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}")
    print(f"CPU native bfloat16: {', '.join(flags) if flags else 'none (bfloat16 is emulated)'}")
    cpu = ("bfloat16 for ViTs of width >= 384 (the image presets' ViT-B/16), float32 for "
           "the tiny ViT and text encoders" if flags else "float32 (no native bfloat16)")
    print(f"amp: auto on this machine: CUDA bfloat16; CPU {cpu}. A run's choice is in its "
          "summary.json ('amp').")
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


def cmd_pretrain(args) -> int:
    from .pretrain import pretrain

    card = pretrain(args.data_root, Path(args.output), epochs=args.epochs, seed=args.seed,
                    quiet=args.quiet)
    print(f"Fashion-MNIST test accuracy {100 * card['test_accuracy']:.2f}% after "
          f"{card['training']['epochs']} epochs ({card['training']['seconds']:.0f} s); "
          f"wrote {args.output}/{card['name']}.safetensors and .json (sha256 {card['sha256'][:12]}...)")
    return 0


def cmd_export(args) -> int:
    from .export import export

    card = export(args.run_dir, args.out)
    what = (f"wrote {args.out}: {card['backbone']} with {card['num_classes']} classes after "
            f"{card['tasks_done']} task(s); load it with lorm.export.build_exported_model, or ")
    if Path(args.out).is_dir():
        print(what + f"transformers.AutoModel.from_pretrained('{args.out}') with the classifier "
              "in head.safetensors (lorm.json says the pooling and max_length)")
    else:
        print(what + "build the timm model its 'lorm' metadata names and "
              "load_state_dict(strict=True)")
    return 0


def cmd_eval(args) -> int:
    from .export import evaluate

    row = evaluate(args.run_dir, args.weights)
    print("accuracy per task (%): " + " ".join(f"{100 * a:.2f}" for a in row))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lorm", description="LoRM: closed-form merging of LoRA "
                                "modules for federated class-incremental learning.")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="what this machine offers lorm: the kernels loaded, "
                          "CUDA devices, native bfloat16 on the CPU and what amp: auto picks")
    info.set_defaults(func=cmd_info)

    demo = sub.add_parser("demo", help="lorm vs fedavg-lora on the embedded digits data "
                          "with label-skewed clients (Dirichlet beta 0.1) over 5 paired seeds, "
                          "with what the paired interval allows to conclude (no download, "
                          "about 1.5 minutes on 2 CPU cores)")
    demo.add_argument("--output", help="folder for the runs (default: runs/<timestamp>)")
    demo.add_argument("--seeds", default=DEMO_SEEDS, help=f"comma-separated (default: {DEMO_SEEDS})")
    demo.add_argument("--betas", default=DEMO_BETAS,
                      help=f"comma-separated Dirichlet betas (default: {DEMO_BETAS}, where the "
                      "benchmark shows LoRM's advantage)")
    demo.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="override a config field for every method (repeatable)")
    demo.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                      help="runs at once, one process and one thread each (default: 2 or "
                      "the number of cores, if fewer)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    comp = sub.add_parser("compare", help="methods x seeds (x betas) on one config: mean +- "
                          "std of every metric and paired 95%% t-intervals of the first method "
                          "against the others; finished runs in the folder are reused")
    comp.add_argument("--methods", default=",".join(DEMO_METHODS),
                      help="comma-separated; the first is compared with the others")
    comp.add_argument("--seeds", default=DEMO_SEEDS, help="comma-separated (default: 0,1,2)")
    comp.add_argument("--betas", help="comma-separated Dirichlet betas (default: the config's)")
    comp.add_argument("--config", help="a shipped preset's name (`lorm presets`) or a YAML file "
                      "(default: the embedded digits benchmark)")
    comp.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="override a config field for every run (repeatable)")
    comp.add_argument("--output", help="folder for the runs (default: runs/<timestamp>)")
    comp.add_argument("--jobs", type=int, default=1,
                      help="runs at once in separate processes (set num_threads accordingly)")
    comp.add_argument("--quiet", action="store_true", help="no progress bars")
    comp.set_defaults(func=cmd_compare)

    run = sub.add_parser("run", help="run a config (a preset, see `lorm presets`, or a YAML file); under "
                         "`torchrun --nproc_per_node=P -m lorm run ...` the clients of every "
                         "round are sharded over the P ranks")
    run.add_argument("--config", help="a shipped preset's name (`lorm presets`) or a YAML file "
                     "(default: the embedded digits benchmark)")
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
                     help="fetch CIFAR-100, the ImageNet-R tree, the EuroSAT images or "
                     "CLINC150's data_full.json into data_root (needs internet; split files and "
                     "the other datasets are fetched by hand, docs/datasets.md); without it "
                     "nothing is ever downloaded")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=cmd_run)

    pre = sub.add_parser("pretrain", help="pretrain the tiny ViT backbone on Fashion-MNIST "
                         "(what lorm ships as its default digits backbone)")
    pre.add_argument("--data-root", help="folder with the Fashion-MNIST IDX files (default: the "
                     "Debian package dataset-fashion-mnist's /usr/share/datasets/fashion-mnist)")
    pre.add_argument("--output", required=True, help="folder for the .safetensors and .json card")
    pre.add_argument("--epochs", type=int, default=30)
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--quiet", action="store_true", help="no progress bars")
    pre.set_defaults(func=cmd_pretrain)

    text = ("write a run's deployed model (W0 + merged residual folded into the weights, "
            "merged head) in its family's own format: a timm ViT as a plain timm state dict "
            "in one .safetensors file, a text encoder (minilm, hf-bert) as a folder that "
            "transformers.AutoModel.from_pretrained loads")
    exp = sub.add_parser("export", help=text, description=text[0].upper() + text[1:] + ".")
    exp.add_argument("run_dir", help="a finished run (or one stopped between tasks)")
    exp.add_argument("--out", required=True,
                     help="ViT runs: the .safetensors file to write (the card in its 'lorm' "
                     "metadata). Text runs: the folder to write (config.json, "
                     "model.safetensors, tokenizer files, head.safetensors, lorm.json); an "
                     "earlier export there is replaced, a folder holding anything else is "
                     "refused")
    exp.set_defaults(func=cmd_export)

    text = ("recompute the accuracy on every task after a run's last finished task (the "
            "accuracy matrix's last row), from its checkpoint or from what `lorm export` wrote")
    ev = sub.add_parser("eval", help=text, description=text[0].upper() + text[1:] + ".")
    ev.add_argument("run_dir")
    ev.add_argument("--weights", help="an exported model to evaluate instead: the .safetensors "
                    "file of a ViT run, the folder of a text run (it must be for this run's "
                    "model: same backbone, classes, input size / pooling and max_length)")
    ev.set_defaults(func=cmd_eval)

    pres = sub.add_parser("presets", help="list the shipped presets (the paper's settings) "
                          "with their one-line descriptions")
    pres.set_defaults(func=cmd_presets)

    report = sub.add_parser("report", help="print a finished run's summary")
    report.add_argument("run_dir")
    report.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    from .distributed import shutdown
    from .optional import MissingExtra

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, MissingExtra) as exc:  # expected: config, data, weights,
        # checkpoints, dirs, an optional dependency not installed
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown()


if __name__ == "__main__":
    sys.exit(main())
