"""Where a benchmark's figures go: printed as JSON, and with ``--out`` written as
``<stem>.json`` (the whole result) and ``<stem>.md`` (its table)."""

from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, out: str | None, stem: str, markdown: list[str]) -> None:
    """Prints ``result``; with ``out``, writes it and the ``markdown`` lines beside it."""
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.json").write_text(text + "\n")
        (folder / f"{stem}.md").write_text("\n".join(markdown) + "\n")
