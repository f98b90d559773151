"""EuroSAT (RGB) as the authors read it (fed-mammoth seq_eurosat.py MyEuroSAT):
``EuroSAT_RGB/`` images plus ``EuroSAT_RGB/split.json`` with ``train`` / ``val`` /
``test`` lists of ``[relative path, label, class name]``; train and test are used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .registry import LoadedDataset, download_if_asked, register, require_root
from .images import ImageFiles, check_images_exist, require_files
from .transforms import transforms_for

if TYPE_CHECKING:
    from ..config import Config

NUM_CLASSES = 10
URL = "https://zenodo.org/records/7711810/files/EuroSAT_RGB.zip"
LAYOUT = ("<data_root>/EuroSAT_RGB/<Class>/<Class>_<n>.jpg (EuroSAT_RGB.zip, extracted) plus "
          "<data_root>/EuroSAT_RGB/split.json: {\"train\": [[path, label, name], ...], "
          "\"val\": [...], \"test\": [...]} (the authors' file, fetched by hand; --download fetches "
          "the images only)")


def read_split(split_file: Path, folder: Path, split: str) -> tuple[list[Path], list[int], dict]:
    """``(paths, labels, {label: class name})`` of ``split`` in ``split.json``."""
    try:
        rows = json.loads(split_file.read_text())[split]
        paths = [folder / str(r[0]) for r in rows]
        labels = [int(r[1]) for r in rows]
        names = {int(r[1]): str(r[2]) for r in rows}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"eurosat: {split_file} is malformed ({type(exc).__name__}: {exc}); "
                         f"expected layout: {LAYOUT}") from None
    if not all(0 <= y < NUM_CLASSES for y in labels):
        raise ValueError(f"eurosat: {split_file} has labels outside 0..9 in {split!r}")
    check_images_exist("eurosat", LAYOUT, paths, split_file)
    return paths, labels, names


@register("eurosat")
class EuroSAT:
    img_size = None

    def load(self, config: "Config") -> LoadedDataset:
        folder = Path(require_root(config)) / "EuroSAT_RGB"
        download_if_asked(config.download, folder, URL, folder.parent)  # not split.json
        split_file = folder / "split.json"
        require_files("eurosat", LAYOUT, folder, split_file)
        train_p, train_y, names = read_split(split_file, folder, "train")
        test_p, test_y, test_names = read_split(split_file, folder, "test")
        names.update(test_names)
        train_tf, test_tf = transforms_for("eurosat", config)
        return LoadedDataset(ImageFiles(train_p, train_y, train_tf), ImageFiles(test_p, test_y, test_tf),
                             [names.get(c, str(c)) for c in range(NUM_CLASSES)], train_y, test_y)
