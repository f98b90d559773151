"""CUB-200-2011 in its official archive layout, split by ``train_test_split.txt``.

``cub_pixels: negative`` reproduces the pixels fed-mammoth's reader hands its transforms
(``_datasets/seq_cub200.py`` ``MyCUB200.__getitem__``: ``Image.fromarray((img *
255).astype(np.int8), mode="RGB")`` on the uint8 image): ``img * 255`` wraps in uint8
to ``(256 - v) mod 256``, the int8 cast keeps the bits, and Pillow (up to 11.2) reads the
bits back as RGB bytes, so each channel value ``v`` becomes ``(256 - v) mod 256``: the
colour negative ``255 - v`` plus one, with black kept black. docs/fidelity.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .registry import LoadedDataset, register, require_root
from .images import ImageFiles, check_images_exist, require_files
from .transforms import transforms_for

if TYPE_CHECKING:
    from ..config import Config

LAYOUT = ("<data_root>/CUB_200_2011/{images.txt, image_class_labels.txt, "
          "train_test_split.txt, classes.txt, images/<class>/<image>} (CUB_200_2011.tgz, "
          "extracted)")


def read_table(path: Path, columns: int) -> dict[int, list[str]]:
    """``<id> <value>...`` lines -> {id: values}; a bad line is an error naming it."""
    table = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=columns - 1)
        if len(fields) != columns or not fields[0].isdigit():
            raise ValueError(f"cub200: {path} line {number} is malformed ({line!r}): expected "
                             f"{columns} space-separated fields starting with an image id; "
                             f"expected layout: {LAYOUT}")
        table[int(fields[0])] = fields[1:]
    return table


# (256 - v) mod 256 for each 8-bit value v, the same table for the three bands
NEGATIVE_LUT = [(256 - v) % 256 for v in range(256)] * 3


class Negative:
    """``transform(image with each channel value v -> (256 - v) mod 256)``."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        image = image.point(NEGATIVE_LUT)
        return self.transform(image) if self.transform else image


@register("cub200")
class Cub200:
    img_size = None

    def load(self, config: "Config") -> LoadedDataset:
        folder = Path(require_root(config)) / "CUB_200_2011"
        names = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
        require_files("cub200", LAYOUT, folder, *(folder / n for n in names))
        images, labels, is_train, classes = (read_table(folder / n, 2) for n in names)
        if set(images) != set(labels) or set(images) != set(is_train):
            raise ValueError(f"cub200: images.txt, image_class_labels.txt and "
                             f"train_test_split.txt under {folder} list different image ids")
        ids = sorted(images)
        paths = {i: folder / "images" / images[i][0] for i in ids}
        check_images_exist("cub200", LAYOUT, list(paths.values()), folder / "images.txt")
        label = {i: int(labels[i][0]) - 1 for i in ids}  # classes are numbered from 1
        split = {s: [i for i in ids if is_train[i][0] == s] for s in ("1", "0")}
        train_tf, test_tf = transforms_for("cub200", config)
        if config.cub_pixels == "negative":
            train_tf, test_tf = Negative(train_tf), Negative(test_tf)
        return LoadedDataset(
            ImageFiles([paths[i] for i in split["1"]], [label[i] for i in split["1"]], train_tf),
            ImageFiles([paths[i] for i in split["0"]], [label[i] for i in split["0"]], test_tf),
            [classes[c][0] for c in sorted(classes)],
            [label[i] for i in split["1"]], [label[i] for i in split["0"]])
