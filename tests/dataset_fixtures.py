"""Writers of each dataset's real on-disk format with tiny generated images: the real
folder and file names, split files and class counts, one or a few images per class.
Each returns what the authors' reading of those files gives: ``{split: [(relative
path, label)]}`` (what fed-mammoth's _datasets/*.py read; the tests compare the readers'
train/test membership with it)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

Membership = dict[str, list[tuple[str, int]]]


def _image(path: Path, seed: int, size: tuple[int, int] = (10, 7)) -> None:
    """A tiny non-square RGB JPEG (non-square: the squash to S x S is exercised)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def write_imagenet_r(root: Path, per_class: tuple[int, int] = (1, 1)) -> Membership:
    """imagenet-r/<wnid>/<style>_<n>.jpg for 200 wnids, and the authors' two yaml split
    files listing paths as their downloader leaves them (``<DATASET_PATH>/imagenet-r/...``)."""
    import yaml

    folder = root / "imagenet-r"
    out: Membership = {"train": [], "test": []}
    for label in range(200):
        wnid = f"n{1440764 + 17 * label:08d}"
        for split, count in zip(("train", "test"), per_class):
            for k in range(count):
                rel = f"{wnid}/{'art' if split == 'train' else 'sketch'}_{k}.jpg"
                _image(folder / rel, seed=label * 10 + k + (5 if split == "test" else 0))
                out[split].append((f"imagenet-r/{rel}", label))
    for split, rows in out.items():
        spec = {"data": [f"../data/{rel}" for rel, _ in rows], "targets": [y for _, y in rows]}
        (folder / f"imagenet-r_{split}.yaml").write_text(yaml.safe_dump(spec))
    return out


EUROSAT = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
           "PermanentCrop", "Residential", "River", "SeaLake"]
EUROSAT_NAMES = ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road",
                 "Industrial Buildings", "Pasture Land", "Permanent Crop Land",
                 "Residential Buildings", "River", "Sea or Lake"]


def write_eurosat(root: Path, per_class: tuple[int, int, int] = (1, 1, 1)) -> Membership:
    """EuroSAT_RGB/<Class>/<Class>_<n>.jpg (64x64 in the real set) and split.json."""
    folder = root / "EuroSAT_RGB"
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    n = 0
    for label, cls in enumerate(EUROSAT):
        for part, count in zip(split, per_class):
            for _ in range(count):
                n += 1
                rel = f"{cls}/{cls}_{n}.jpg"
                _image(folder / rel, seed=n, size=(8, 8))
                split[part].append([rel, label, EUROSAT_NAMES[label]])
    (folder / "split.json").write_text(json.dumps(split))
    return {s: [(f"EuroSAT_RGB/{r[0]}", r[1]) for r in split[s]] for s in ("train", "test")}


def write_cub200(root: Path, per_class: tuple[int, int] = (1, 1)) -> Membership:
    """CUB_200_2011/ with images.txt, image_class_labels.txt, train_test_split.txt,
    classes.txt and images/<NNN.Name>/<Name>_<n>.jpg; ids interleave train and test."""
    folder = root / "CUB_200_2011"
    images, labels, splits, classes = [], [], [], []
    out: Membership = {"train": [], "test": []}
    image_id = 0
    for c in range(1, 201):
        cls = f"{c:03d}.Bird_{c}"
        classes.append(f"{c} {cls}")
        for is_train in [1] * per_class[0] + [0] * per_class[1]:
            image_id += 1
            rel = f"{cls}/Bird_{c}_{image_id:04d}_{100 + image_id}.jpg"
            _image(folder / "images" / rel, seed=image_id)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            splits.append(f"{image_id} {is_train}")
            out["train" if is_train else "test"].append((f"CUB_200_2011/images/{rel}", c - 1))
    for name, lines in (("images.txt", images), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", splits), ("classes.txt", classes)):
        (folder / name).write_text("\n".join(lines) + "\n")
    return out


def write_cars196(root: Path, per_class: tuple[int, int] = (1, 1)) -> Membership:
    """stanford_cars/ as torchvision's StanfordCars reads it: devkit/cars_meta.mat,
    devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat, cars_{train,test}/NNNNN.jpg."""
    import scipy.io

    folder = root / "stanford_cars"
    (folder / "devkit").mkdir(parents=True, exist_ok=True)
    out: Membership = {"train": [], "test": []}
    for split, count, annos in (("train", per_class[0], folder / "devkit" / "cars_train_annos.mat"),
                                ("test", per_class[1], folder / "cars_test_annos_withlabels.mat")):
        rows = []
        for c in range(1, 197):
            for _ in range(count):
                fname = f"{len(rows) + 1:05d}.jpg"
                _image(folder / f"cars_{split}" / fname, seed=len(rows) + (0 if split == "train" else 9999))
                rows.append((fname, c))
                out[split].append((f"stanford_cars/cars_{split}/{fname}", c - 1))
        records = np.zeros(len(rows), dtype=[("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"),
                                             ("bbox_y2", "O"), ("class", "O"), ("fname", "O")])
        for i, (fname, c) in enumerate(rows):
            records[i] = (1, 1, 9, 6, c, fname)
        scipy.io.savemat(str(annos), {"annotations": records})
    names = np.array([f"Make Model {c} 2012" for c in range(1, 197)], dtype=object)
    scipy.io.savemat(str(folder / "devkit" / "cars_meta.mat"), {"class_names": names})
    return out


def write_imagenet_a(root: Path, per_class: tuple[int, int] = (1, 1)) -> Membership:
    """imagenet-a/{train,test}/<wnid>/<n>.jpg for 200 wnids (the authors' archive)."""
    out: Membership = {"train": [], "test": []}
    for label in range(200):
        wnid = f"n{1498041 + 23 * label:08d}"
        for split, count in zip(("train", "test"), per_class):
            for k in range(count):
                rel = f"imagenet-a/{split}/{wnid}/0.{label:03d}{k}.jpg"
                _image(root / rel, seed=label * 7 + k + (3 if split == "test" else 0))
                out[split].append((rel, label))
    return out


def write_cifar100(root: Path, per_class: tuple[int, int] = (1, 1)) -> Membership:
    """cifar-100-python/{train,test,meta} pickles; membership as (index, label)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out: Membership = {}
    for split, count in zip(("train", "test"), per_class):
        labels = [c for c in range(100) for _ in range(count)][::-1]  # not sorted on disk
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        with open(folder / split, "wb") as f:
            pickle.dump({"data": data, "fine_labels": labels, "coarse_labels": [0] * len(labels),
                         "filenames": [f"img_{i}.png" for i in range(len(labels))]}, f)
        out[split] = [(str(i), y) for i, y in enumerate(labels)]
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class_{c}" for c in range(100)],
                     "coarse_label_names": [f"super_{c}" for c in range(20)]}, f)
    return out


def fake_clinc(path: Path, per_intent=None, intents=150) -> Path:
    """A data_full.json with clinc/oos-eval's layout and counts, made-up queries."""
    from lorm.fcil.datasets import clinc150

    per_intent = per_intent or clinc150.PER_INTENT
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(50)]
    data = {split: [[" ".join(rng.choice(words, rng.integers(2, 9))) + f" i{c}", f"intent_{c:03d}"]
                    for c in range(intents) for _ in range(n)]
            for split, n in per_intent.items()}
    data.update(oos_train=[["x", "oos"]], oos_val=[["x", "oos"]], oos_test=[["x", "oos"]])
    path.write_text(json.dumps(data))
    return path


def write_clinc150(root: Path) -> Path:
    """``root/data_full.json`` with CLINC150's layout and counts (text, no images)."""
    return fake_clinc(root / "data_full.json")


WRITERS = {"imagenet-r": write_imagenet_r, "eurosat": write_eurosat, "cub200": write_cub200,
           "cars196": write_cars196, "imagenet-a": write_imagenet_a, "cifar100": write_cifar100}
