"""Two builds of lorm_ext side by side: the same op timings (bench_ops' "ours" column
plus a server-side inspect_terms call) for a `before` and an `after` source tree.

    python benchmarks/compare_builds.py --before /tmp/old-tree --after . \
        [--rounds 3] [--repeats 5] [--out benchmarks/results --name stable-abi-cpu]

Each tree must hold a built extension (lorm_ext/_C*.so). The builds cannot share a
process (both register the lorm_ext namespace), so every round runs one child process
per tree, before first in even rounds and after first in odd ones, so drift of the
machine and warm-up hit both; a row's figure is the median over rounds of each child's
median of --repeats calls.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
import bench_ops, lorm_ext
torch.manual_seed(0)
gen = torch.Generator().manual_seed(0)
cases = []
for d in (768, 3072):
    for dtype in (torch.bfloat16, torch.float32):
        cases += bench_ops.gram_rows(d, dtype, "cpu", gen)
    for r in (1, 8, 32):
        cases += bench_ops.lowrank_rows(d, r, "cpu", gen)
cases += bench_ops.solve_rows("cpu", gen)
update = [torch.randn(8, 768, generator=gen) for _ in range(96)]
sym = torch.randn(768, 768, generator=gen); sym = sym + sym.T
cases.append(("inspect_terms", "96 x (8, 768) + 1 x (768, 768) symmetric",
              lambda: lorm_ext.inspect_terms(update + [sym], [False] * 96 + [True]), None, None))
repeats = int(sys.argv[2])
rows = [{"op": op, "inputs": shape, "ms": bench_ops.median_ms(ours, "cpu", repeats)}
        for op, shape, ours, _naive, _ref in cases]
print(json.dumps({"lorm_ext": lorm_ext.__file__, "torch": torch.__version__, "rows": rows}))
"""


def run_child(tree: Path, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", CHILD, str(HERE), str(repeats)], env=env,
                         capture_output=True, text=True, check=True, cwd=tree)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not Path(result["lorm_ext"]).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: the child imported {result['lorm_ext']}, not this tree's build")
    return result


def markdown(before: dict, after: dict, names: tuple[str, str], rounds: int, repeats: int) -> str:
    lines = [f"# Two builds of lorm_ext on cpu ({platform.machine()}, {os.cpu_count()} cores)", "",
             f"before = {names[0]}, after = {names[1]}; torch {after['torch']}; median over "
             f"{rounds} rounds (order alternating) of the median of {repeats} calls. "
             "before / after > 1 means after is faster.", "",
             "| op | inputs | before (ms) | after (ms) | before / after |", "|---|---|---:|---:|---:|"]
    for b, a in zip(before["rows"], after["rows"]):
        lines.append(f"| {a['op']} | {a['inputs']} | {b['ms']:.2f} | {a['ms']:.2f} | "
                     f"{b['ms'] / a['ms']:.2f} |")
    ratios = [b["ms"] / a["ms"] for b, a in zip(before["rows"], after["rows"])]
    geo = statistics.geometric_mean(ratios)
    lines += ["", f"Geometric mean of before / after over {len(ratios)} rows: {geo:.3f}."]
    return "\n".join(lines) + "\n"


def merge_rounds(results: list[dict]) -> dict:
    rows = [dict(row, ms=statistics.median(r["rows"][i]["ms"] for r in results))
            for i, row in enumerate(results[0]["rows"])]
    return dict(results[0], rows=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree with a built lorm_ext")
    parser.add_argument("--after", type=Path, required=True, help="source tree with a built lorm_ext")
    parser.add_argument("--before-name", default="before")
    parser.add_argument("--after-name", default="after")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="folder for <name>.md and .json")
    parser.add_argument("--name", default="builds-cpu")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    trees = {"before": args.before, "after": args.after}
    for round_ in range(args.rounds):
        order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
        for which in order:
            runs[which].append(run_child(trees[which], args.repeats))
    before, after = merge_rounds(runs["before"]), merge_rounds(runs["after"])
    text = markdown(before, after, (args.before_name, args.after_name), args.rounds, args.repeats)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.md").write_text(text)
        (args.out / f"{args.name}.json").write_text(json.dumps({"before": before, "after": after}, indent=1))


if __name__ == "__main__":
    main()
