"""End to end against the authors' code: fed-mammoth's LoRM (a checkout of their
repository, run in its own venv) and lorm on one identical small run, wall time and
seconds per phase side by side, in one invocation.

    python benchmarks/bench_vs_fed_mammoth.py --fed-mammoth /work/fm-src \\
        --fm-python /work/fm-venv/bin/python --out benchmarks/results

Their code, once (outside this repository; never committed):

    git clone <a mirror of aimagelab/fed-mammoth> /work/fm-src    # or git archive HEAD | tar -x
    python3.11 -m venv /work/fm-venv && /work/fm-venv/bin/pip install torch==2.14.1 \
        torchvision==0.29.1 timm kornia lightning 'transformers<5' wandb matplotlib \
        setproctitle tqdm pandas scikit-learn pyyaml requests onedrivedownloader \
        googledrivedownloader==0.4 'deeplake<4'

The run: random-init ViT-B/16 (vit_base_patch16_224.augreg_in21k's shapes), LoRA rank 1
on attn.qkv / attn.proj / mlp.fc1 / mlp.fc2, CIFAR-100's format (a fixture of random
images written here, read by both: tests/dataset_fixtures.py), the first 2 tasks of 10
classes, 2 clients, Dirichlet 0.5, 1 round x 1 local epoch, batch 16, lr 0.003, 2
threads each. Four configurations, each run ``--repeats`` times, taking turns
(theirs, lorm, theirs, lorm) so that the load of a shared machine hits both alike:

- fed-mammoth float32: ``--precision=32-true`` and matmul precision "highest";
- lorm float32: ``amp: false``;
- fed-mammoth default: its own ``precision`` (16-mixed) and matmul precision "medium";
- lorm default: ``amp: auto``.

Phases: training (a client's loop over its batches), statistics (Gram passes, per round
and at a task's end), merge (server), evaluation, other (the rest of the wall time:
interpreter start, imports, model and data set-up, checkpoints). lorm's come from its
summary.json (``lorm.fcil.progress.Clock``); fed-mammoth's from wrappers around their
functions (benchmarks/_fed_mammoth_runner.py, which also holds the CPU patches, each
with its reason; their files are never edited). os.getloadavg() is recorded around
each run. Not run by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import emit

ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().parent / "_fed_mammoth_runner.py"
PHASES = ("train", "stats", "merge", "eval")
PHASE_NAMES = {"train": "client training", "stats": "statistics (Gram passes)",
               "merge": "server merge", "eval": "evaluation", "other": "other"}
# (label, side, precision mode), in the order they take turns
CONFIGS = [("fed-mammoth float32", "fed-mammoth", "float32"),
           ("lorm float32 (amp: false)", "lorm", "false"),
           ("fed-mammoth default (matmul medium)", "fed-mammoth", "default"),
           ("lorm default (amp: auto)", "lorm", "auto")]


def write_fixture(data: Path, train_per_class: int, test_per_class: int) -> None:
    """CIFAR-100's pickles (all 100 classes; the run uses the first 20)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from dataset_fixtures import write_cifar100

    write_cifar100(data, per_class=(train_per_class, test_per_class))


def fm_command(args, mode: str, work: Path, phases: Path) -> list[str]:
    """Their README's CIFAR-100 LoRM command, cut to this run's size, on the CPU."""
    cmd = [args.fm_python, str(RUNNER), str(Path(args.fed_mammoth).resolve()), str(phases), mode, "--",
           "--model=lorm", "--dataset=seq-cifar100", "--network=vit", "--batch_size=16",
           "--lr=0.003", "--distribution_alpha=0.5", f"--num_epochs={args.epochs}",
           f"--num_comm_rounds={args.rounds}", f"--num_clients={args.clients}", "--wd_reg=0",
           "--lora_head=False", "--regmean_all=True", "--gram_dtype=32", "--reg_dtype_64=True",
           "--alpha_regmean_head=0.5", "--alpha_regmean_backbone=0", "--train_matrix=alt",
           "--lr_B=-1", "--lr_A=-1", f"--r={args.rank}", "--device=cpu", "--wandb=False",
           f"--output_folders_root={work / 'fm-out'}"]
    return cmd + (["--precision=32-true"] if mode == "float32" else [])


def lorm_command(args, amp: str, work: Path, run_dir: Path) -> list[str]:
    """The cifar100-beta0.5 preset cut to the same size."""
    sets = [f"data_root={work / 'data'}", "num_tasks=2", "max_classes=20",
            f"num_clients={args.clients}", f"rounds={args.rounds}", f"local_epochs={args.epochs}",
            "batch_size=16", f"rank={args.rank}", "pretrained=none", f"num_threads={args.threads}",
            f"amp={amp}"]
    return [sys.executable, "-m", "lorm", "run", "--config", "cifar100-beta0.5", "--quiet",
            "--output", str(run_dir), *[a for s in sets for a in ("--set", s)]]


def run_one(cmd: list[str], cwd: Path, env: dict, log: Path) -> dict:
    before = os.getloadavg()
    start = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, check=False, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    if rc != 0:
        raise RuntimeError(f"exit {rc}: {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return {"wall_s": round(wall, 2), "loadavg_before": [round(x, 2) for x in before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()]}


def with_phases(row: dict, seconds: dict[str, float]) -> dict:
    phases = {p: round(seconds[p], 2) for p in PHASES}
    phases["other"] = round(row["wall_s"] - sum(seconds[p] for p in PHASES), 2)
    return {**row, "phases_s": phases}


def run_config(args, side: str, mode: str, work: Path, rep: int, env: dict) -> dict:
    tag = f"{side}-{mode}-{rep}"
    if side == "fed-mammoth":
        phases = work / f"{tag}.json"
        row = run_one(fm_command(args, mode, work, phases), work, env, work / f"{tag}.log")
        info = json.loads(phases.read_text())
        return {**with_phases(row, info["seconds"]), "calls": info["calls"],
                "matmul_precision": info["matmul_precision"], "threads": info["threads"]}
    run_dir = work / tag
    row = run_one(lorm_command(args, mode, work, run_dir), ROOT, env, work / f"{tag}.log")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {**with_phases(row, summary["seconds"]), "amp": summary["amp"],
            "final_average_accuracy": summary.get("final_average_accuracy")}


def median_row(runs: list[dict]) -> dict:
    keys = (*PHASES, "other")
    return {"wall_s": round(statistics.median(r["wall_s"] for r in runs), 2),
            "phases_s": {k: round(statistics.median(r["phases_s"][k] for r in runs), 2) for k in keys}}


def measure(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-vs-fm-"))
    write_fixture(work / "data", args.train_per_class, args.test_per_class)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), str(ROOT),
                                          os.environ.get("PYTHONPATH", "")]),
           "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in CONFIGS}
    for rep in range(args.repeats):
        for label, side, mode in CONFIGS:
            row = run_config(args, side, mode, work, rep, env)
            print(f"[{rep}] {label}: {row['wall_s']} s {row['phases_s']} load {row['loadavg_before']}"
                  f" -> {row['loadavg_after']}", file=sys.stderr, flush=True)
            runs[label].append(row)
    return {"work_dir": str(work), "runs": runs,
            "median": {label: median_row(rows) for label, rows in runs.items()}}


def ratio(theirs: float, ours: float) -> float:
    return round(theirs / ours, 2) if ours > 0 else float("inf")


def ratios(median: dict) -> dict:
    """fed-mammoth's seconds over lorm's (> 1: lorm faster), per pairing and phase."""
    pairs = {"default vs default": ("fed-mammoth default (matmul medium)", "lorm default (amp: auto)"),
             "float32 vs float32": ("fed-mammoth float32", "lorm float32 (amp: false)"),
             "lorm default vs their float32": ("fed-mammoth float32", "lorm default (amp: auto)")}
    out = {}
    for name, (theirs, ours) in pairs.items():
        t, o = median[theirs], median[ours]
        out[name] = {"end_to_end": ratio(t["wall_s"], o["wall_s"]),
                     **{k: ratio(t["phases_s"][k], o["phases_s"][k]) for k in t["phases_s"]}}
    return out


def commands(args) -> list[str]:
    work = Path("$WORK")
    return [" ".join(fm_command(args, "float32", work, work / "phases.json")),
            " ".join(fm_command(args, "default", work, work / "phases.json")),
            " ".join(lorm_command(args, "false", work, work / "run")),
            " ".join(lorm_command(args, "auto", work, work / "run"))]


def patches() -> list[tuple[str, str, str]]:
    sys.path.insert(0, str(RUNNER.parent))
    from _fed_mammoth_runner import PATCHES

    return PATCHES


def markdown(result: dict) -> list[str]:
    med, rat = result["median"], result["ratios"]
    labels = [label for label, _, _ in CONFIGS]
    lines = ["# lorm against fed-mammoth (the authors' code), end to end on the CPU", "",
             f"{result['setup']}", "",
             "Seconds (median of the repeats; > 1 in a ratio column: lorm faster):", "",
             "| phase | " + " | ".join(labels) + " | default vs default | float32 vs float32 |",
             "|---|" + "---:|" * (len(labels) + 2)]
    for key in ("wall", *PHASES, "other"):
        name = "end to end (wall)" if key == "wall" else PHASE_NAMES[key]
        cells = [med[label]["wall_s"] if key == "wall" else med[label]["phases_s"][key] for label in labels]
        rkey = "end_to_end" if key == "wall" else key
        lines.append(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells)
                     + f" | {rat['default vs default'][rkey]:.2f}x | {rat['float32 vs float32'][rkey]:.2f}x |")
    lines += ["", (f"lorm's default against their float32: "
              f"{rat['lorm default vs their float32']['end_to_end']:.2f}x end to end."), "",
              "Each run (wall s, load average 1/5/15 min before -> after):", ""]
    for label in labels:
        for i, r in enumerate(result["runs"][label]):
            lines.append(f"- {label} #{i}: {r['wall_s']} s, phases {r['phases_s']}, load "
                         f"{r['loadavg_before']} -> {r['loadavg_after']}")
    lines += ["", "## Commands", "", "```bash", result["command"]]
    lines += [("# what it runs ($WORK: a temporary folder holding data/cifar-100-python;"
              " fed-mammoth runs with $WORK as its working directory, DATASET_PATH = ./data)")]
    lines += [*result["commands"], "```", "", "## Patches to run their code on the CPU", "",
              ("None of their files is edited: benchmarks/_fed_mammoth_runner.py replaces each of "
              "these in its own process, then runs their main.py."), "",
              "| what is replaced | their code | why |", "|---|---|---|"]
    lines += [f"| {w} | {where} | {why} |" for w, where, why in result["patches"]]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in result.get("notes", [])]
    return lines


def render(args) -> None:
    """Writes the markdown of a saved result again, with ``--notes`` in it."""
    result = json.loads(Path(args.render).read_text())
    if args.notes:
        result["notes"] = [n for n in Path(args.notes).read_text().splitlines() if n.strip()]
    emit(result, args.out, args.stem, markdown(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fed-mammoth", help="a checkout of aimagelab/fed-mammoth")
    parser.add_argument("--fm-python", help="python of a venv with its requirements")
    parser.add_argument("--render", default=None,
                        help="a results .json of an earlier invocation: write its .md again "
                             "(with --notes), running nothing")
    parser.add_argument("--out", default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rank", type=int, default=1)
    parser.add_argument("--train-per-class", type=int, default=10)
    parser.add_argument("--test-per-class", type=int, default=5)
    parser.add_argument("--notes", default=None, help="a file of notes (one a line) for the results")
    parser.add_argument("--fm-rev", default=None, help="their commit, where the checkout is not a git one")
    parser.add_argument("--stem", default="vs-fed-mammoth-cpu")
    args = parser.parse_args()
    if args.render:
        render(args)
        return
    if not (args.fed_mammoth and args.fm_python):
        parser.error("--fed-mammoth and --fm-python are needed (or --render)")
    fm_rev = args.fm_rev or subprocess.run(["git", "-C", args.fed_mammoth, "rev-parse", "HEAD"],
                                           check=False, capture_output=True,
                                           text=True).stdout.strip() or "(revision not given)"
    result = measure(args)
    result["ratios"] = ratios(result["median"])
    result["setup"] = (
        f"Random-init ViT-B/16, LoRA rank {args.rank}, CIFAR-100 format (random images), 2 tasks x "
        f"10 classes ({args.train_per_class} train / {args.test_per_class} test images per class), "
        f"{args.clients} clients, {args.rounds} round(s) x {args.epochs} epoch(s), batch 16, "
        f"{args.threads} threads each; {args.repeats} run(s) per configuration, taking turns; "
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"fed-mammoth at {fm_rev}.")
    result["command"] = "python benchmarks/bench_vs_fed_mammoth.py " + " ".join(sys.argv[1:])
    result["commands"] = commands(args)
    result["patches"] = patches()
    if args.notes:
        result["notes"] = [n for n in Path(args.notes).read_text().splitlines() if n.strip()]
    emit(result, args.out, args.stem, markdown(result))


if __name__ == "__main__":
    main()
