"""Methods x seeds (x betas) on one config, and what the seeds allow to conclude.

Every (beta, method, seed) is an ordinary run in ``<output>/beta<b>/<method>/seed<s>``;
a run whose ``summary.json`` exists is reused, so an interrupted comparison continues
where it stopped. The report gives mean +- std over seeds of each metric and, for the
first method against each other one, the paired difference over seeds with a 95%
t-interval ("not significant" when it contains 0).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from .fcil import load_config, run
from .fcil.metrics import just_learned_accuracy

# Rows that are not a method alone: name -> config overrides. "joint-federated" is
# fed-mammoth's joint reference (their joint-oos dataset): LoRM over the same Dirichlet
# clients with every class in one task; "joint" is one client holding all the data.
ROWS = {"joint-federated": ["method=lorm", "num_tasks=1"]}
METRICS = ("final_average_accuracy", "just_learned_accuracy", "average_incremental_accuracy",
           "forgetting", "forgetting_fed_mammoth")


@dataclass(frozen=True)
class Cell:
    beta: float
    method: str
    seed: int

    def folder(self, output: Path) -> Path:
        return output / f"beta{self.beta:g}" / self.method / f"seed{self.seed}"


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t
    return float(t.ppf(0.975, df))


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paired_difference(ours: list[float], theirs: list[float]) -> dict:
    """Mean of ``ours[i] - theirs[i]`` with its 95% t-interval over the seeds."""
    diffs = [a - b for a, b in zip(ours, theirs)]
    mean, std = mean_std(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "low": None, "high": None, "significant": None, "seeds": len(diffs)}
    half = t_quantile_975(len(diffs) - 1) * std / math.sqrt(len(diffs))
    return {"mean": mean, "low": mean - half, "high": mean + half,
            "significant": not (mean - half <= 0.0 <= mean + half), "seeds": len(diffs)}


def metric(summary: dict, name: str) -> float:
    """A run summary's metric; summaries written before just-learned accuracy existed
    get it from their accuracy matrix."""
    if name == "just_learned_accuracy" and name not in summary:
        return just_learned_accuracy(summary["accuracy_matrix"])
    return summary[name]


def row_overrides(row: str) -> list[str]:
    """The config overrides a row of the comparison stands for (a method, or :data:`ROWS`)."""
    return list(ROWS.get(row, [f"method={row}"]))


def run_cell(cell: Cell, config_path: str | None, overrides: list[str], output: Path,
             quiet: bool) -> dict:
    folder = cell.folder(output)
    summary_path = folder / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    config = load_config(config_path, list(overrides) + row_overrides(cell.method)
                         + [f"seed={cell.seed}", f"beta={cell.beta}"])
    return run(config, folder, quiet=quiet, overwrite=True)


def summarize_cells(cells: dict[Cell, dict], methods: list[str], betas: list[float],
                    seeds: list[int]) -> dict:
    report: dict = {"methods": methods, "seeds": seeds, "betas": betas, "by_beta": {}}
    for beta in betas:
        rows = {}
        for method in methods:
            runs = [cells[Cell(beta, method, s)] for s in seeds]
            row = {m: mean_std([metric(r, m) for r in runs]) for m in METRICS}
            row["kb_per_client_round"] = mean_std([r["bytes_per_client_per_round"] / 1024
                                                   for r in runs])
            row["seconds"] = mean_std([sum(r["seconds"].values()) for r in runs])
            row["per_seed_faa"] = [r["final_average_accuracy"] for r in runs]
            rows[method] = row
        first = methods[0]
        differences = {other: paired_difference(rows[first]["per_seed_faa"],
                                                rows[other]["per_seed_faa"])
                       for other in methods[1:]}
        report["by_beta"][f"{beta:g}"] = {"rows": rows, "faa_difference": differences}
    return report


def compare(methods: list[str], seeds: list[int], betas: list[float | None], output: Path,
            config_path: str | None = None, overrides: list[str] | None = None,
            quiet: bool = False, jobs: int = 1) -> dict:
    """Runs every (beta, method, seed) and writes ``compare.json`` and ``compare.png``;
    a beta of None means the config's own. ``jobs > 1`` runs that many cells at once in
    separate processes (give each run ``num_threads=1``)."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if not methods or not seeds or not betas:
        raise ValueError("compare needs at least one method, one seed and one beta")
    for method in methods:  # fail before any run starts on a bad method or override
        base = load_config(config_path, list(overrides or []) + row_overrides(method))
    betas = [base.beta if beta is None else beta for beta in betas]  # None: the config's
    output = Path(output)
    todo = [Cell(beta, method, seed) for beta in betas for method in methods for seed in seeds]
    args = [(cell, config_path, list(overrides or []), output, quiet or jobs > 1) for cell in todo]
    if jobs > 1:  # independent seeded runs: the same results in any order, on any worker
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            cells = dict(zip(todo, pool.map(run_cell, *zip(*args))))
    else:
        cells = {cell: run_cell(*a) for cell, a in zip(todo, args)}
    report = summarize_cells(cells, methods, betas, seeds)
    report["config"] = {"config": config_path, "overrides": list(overrides or [])}
    output.mkdir(parents=True, exist_ok=True)
    (output / "compare.json").write_text(json.dumps(report, indent=1))
    plot(report, output / "compare.png")
    return report


def format_report(report: dict) -> str:
    lines = []
    seeds = len(report["seeds"])
    for beta, block in report["by_beta"].items():
        lines.append(f"beta {beta}, {seeds} seed(s), mean +- std over seeds:")
        header = (f"  {'method':<14} {'final avg acc':>15} {'just learned':>15} {'avg inc acc':>15} "
                  f"{'forgetting':>15} "
                  f"{'forg. (f-m)':>15} {'KB/client/rnd':>13} {'seconds':>8}")
        lines += [header, "  " + "-" * (len(header) - 2)]
        for method, row in block["rows"].items():
            cells = " ".join(f"{100 * row[m][0]:>8.2f} +- {100 * row[m][1]:<4.1f}" for m in METRICS)
            lines.append(f"  {method:<14} {cells} {row['kb_per_client_round'][0]:>13.1f} "
                         f"{row['seconds'][0]:>8.1f}")
        first = report["methods"][0]
        for other, d in block["faa_difference"].items():
            if d["low"] is None:
                verdict = "one seed: no interval, nothing can be concluded"
            else:
                verdict = (f"95% CI [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] pp: "
                           + ("significant" if d["significant"] else "not significant"))
            lines.append(f"  FAA {first} - {other}: {100 * d['mean']:+.2f} pp over "
                         f"{d['seeds']} paired seed(s); {verdict}")
        lines.append("")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    betas = list(report["by_beta"])
    methods = report["methods"]
    fig, ax = plt.subplots(figsize=(2 + 1.5 * len(betas) * len(methods) / 2, 3.5))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        means = [100 * report["by_beta"][b]["rows"][method]["final_average_accuracy"][0]
                 for b in betas]
        stds = [100 * report["by_beta"][b]["rows"][method]["final_average_accuracy"][1]
                for b in betas]
        ax.bar([x + i * width for x in range(len(betas))], means, width, yerr=stds, capsize=3,
               label=method)
    ax.set_xticks([x + width * (len(methods) - 1) / 2 for x in range(len(betas))])
    ax.set_xticklabels([f"beta {b}" for b in betas])
    ax.set_ylabel("final average accuracy (%)")
    ax.set_title(f"mean +- std over {len(report['seeds'])} seed(s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
