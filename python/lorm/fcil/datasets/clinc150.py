"""CLINC150 (clinc/oos-eval ``data_full.json``, CC BY 3.0): 150 intents, 100 train /
20 val / 30 test queries each, plus out-of-scope queries (not used, as in fed-mammoth's
``seq-oos``).

Label ids are the sorted intent names (fed-mammoth ``_datasets/seq_oos.py``
``MyOOS.__init__``); train is the ``train`` split, test the ``test`` split. The
samples are raw texts: the backbone tokenises them once per run (``Backbone.prepare``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from .registry import LoadedDataset, download_if_asked, register

FILE = "data_full.json"
URL = "https://raw.githubusercontent.com/clinc/oos-eval/master/data/data_full.json"
NUM_INTENTS = 150
PER_INTENT = {"train": 100, "val": 20, "test": 30}


class TextDataset(Dataset):
    """``(text, label)`` pairs; ``texts`` and ``targets`` ``(N,)`` for whole-set use."""

    def __init__(self, texts: list[str], targets: np.ndarray):
        self.texts, self.targets = texts, np.asarray(targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.texts[i], int(self.targets[i])


def _split(data: dict, name: str, path: Path) -> list[tuple[str, str]]:
    rows = data.get(name)
    if not isinstance(rows, list) or not all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(v, str) for v in r)
            for r in rows):
        raise ValueError(f"{path}: '{name}' must be a list of [query, intent] string pairs "
                         "(the clinc/oos-eval data_full.json layout)")
    return [(text, intent) for text, intent in rows]


def check_counts(rows: list[tuple[str, str]], split: str, path: Path) -> None:
    """Every one of the 150 intents holds exactly the split's published count."""
    counts = Counter(intent for _, intent in rows)
    bad = {k: v for k, v in counts.items() if v != PER_INTENT[split]}
    if len(counts) != NUM_INTENTS or bad:
        raise ValueError(f"{path}: '{split}' has {len(counts)} intents (expected "
                         f"{NUM_INTENTS}) and {len(bad)} with a count other than "
                         f"{PER_INTENT[split]} (e.g. {dict(list(bad.items())[:3])}); "
                         "is this clinc/oos-eval's data_full.json?")


def read(path: str | Path) -> tuple[TextDataset, TextDataset, list[str]]:
    """``data_full.json`` -> (train, test, intent names by label id), validated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: CLINC150 expects data_root to hold "
                                f"{FILE} (clinc/oos-eval), or run with --download")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not {"train", "val", "test"} <= set(data):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: expected keys train, val, test (and oos_*), found {keys}")
    splits = {name: _split(data, name, path) for name in PER_INTENT}
    for name, rows in splits.items():
        check_counts(rows, name, path)
    intents = sorted({intent for _, intent in splits["train"]})
    for name in ("val", "test"):
        extra = {intent for _, intent in splits[name]} - set(intents)
        if extra:
            raise ValueError(f"{path}: '{name}' has intents absent from train: {sorted(extra)[:3]}")
    label = {intent: i for i, intent in enumerate(intents)}

    def dataset(rows):
        return TextDataset([t for t, _ in rows], np.array([label[i] for _, i in rows]))
    return dataset(splits["train"]), dataset(splits["test"]), intents


def locate(data_root: str | None, download: bool) -> Path:
    """``data_root/data_full.json``, fetched from :data:`URL` first when ``download``."""
    if data_root is None:
        raise FileNotFoundError(f"dataset clinc150 needs --set data_root=<folder holding "
                                f"{FILE}> (or add --download to fetch it there)")
    path = Path(data_root) / FILE
    download_if_asked(download, path, URL, path.parent, extract=False, filename=FILE)
    return path


@register("clinc150")
class Clinc150:
    """The registry's reader: texts for the backbone to tokenise."""

    img_size = None

    def load(self, config) -> LoadedDataset:
        train, test, intents = read(locate(config.data_root, config.download))
        return LoadedDataset(train, test, intents, train.targets, test.targets)
