"""Writes a `lorm compare` benchmark's report as ``NAME.json`` and ``NAME.md``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def write_compare_results(out: str, name: str, title: str, report: dict, text: str,
                          start: float, detail: str = "") -> None:
    """Adds the command line and wall time to ``report`` and writes it to ``out``:
    the JSON whole, the Markdown as ``title``, the command, ``detail`` and ``text``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    report["command"] = "python " + " ".join(sys.argv)
    report["wall_seconds"] = time.perf_counter() - start
    (folder / f"{name}.json").write_text(json.dumps(report, indent=1))
    (folder / f"{name}.md").write_text(
        f"# {title}\n\n`{report['command']}` ({report['wall_seconds'] / 60:.0f} min)"
        f"{detail}.\n\n```\n{text}```\n")
