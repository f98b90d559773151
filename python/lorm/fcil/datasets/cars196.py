"""Stanford Cars (196 classes) in the official train/test split, in the layout
torchvision's ``StanfordCars`` reads (devkit .mat annotations)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .registry import LoadedDataset, register, require_root
from .images import ImageFiles, check_images_exist, require_files
from .transforms import transforms_for

if TYPE_CHECKING:
    from ..config import Config

LAYOUT = ("<data_root>/stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat, "
          "cars_test_annos_withlabels.mat, cars_train/<image>, cars_test/<image>} "
          "(torchvision's StanfordCars layout)")


def read_annotations(path: Path, images: Path) -> tuple[list[Path], list[int]]:
    """``(paths, labels)`` from a devkit annotation file (classes numbered from 1)."""
    import scipy.io

    try:
        rows = scipy.io.loadmat(str(path), squeeze_me=True)["annotations"]
        rows = [rows] if rows.ndim == 0 else rows
        pairs = [(images / str(r["fname"]), int(r["class"]) - 1) for r in rows]
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ValueError(f"cars196: {path} is malformed ({type(exc).__name__}: {exc}); "
                         f"expected layout: {LAYOUT}") from None
    return [p for p, _ in pairs], [y for _, y in pairs]


@register("cars196")
class Cars196:
    img_size = None

    def load(self, config: "Config") -> LoadedDataset:
        import scipy.io

        folder = Path(require_root(config)) / "stanford_cars"
        meta = folder / "devkit" / "cars_meta.mat"
        annos = {"train": (folder / "devkit" / "cars_train_annos.mat", folder / "cars_train"),
                 "test": (folder / "cars_test_annos_withlabels.mat", folder / "cars_test")}
        require_files("cars196", LAYOUT, folder, meta, *(p for pair in annos.values() for p in pair))
        splits = {s: read_annotations(*pair) for s, pair in annos.items()}
        for s, (paths, _) in splits.items():
            check_images_exist("cars196", LAYOUT, paths, annos[s][0])
        names = [str(n) for n in scipy.io.loadmat(str(meta), squeeze_me=True)["class_names"].tolist()]
        train_tf, test_tf = transforms_for("cars196", config)
        (train_p, train_y), (test_p, test_y) = splits["train"], splits["test"]
        return LoadedDataset(ImageFiles(train_p, train_y, train_tf), ImageFiles(test_p, test_y, test_tf),
                             names, train_y, test_y)
