"""Each paper dataset read from a fixture in its authors' on-disk format: train/test
membership as the authors' files define it, the transforms' values worked out by hand,
and one clear error for a missing or malformed file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dataset_fixtures import WRITERS
from lorm.fcil.config import Config
from lorm.fcil.datasets import load_dataset
from lorm.fcil.datasets.transforms import HALF, IMAGENET, RECIPES, build_transforms

COUNTS = {"imagenet-r": 200, "eurosat": 10, "cub200": 200, "cars196": 196, "imagenet-a": 200,
          "cifar100": 100}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    out = {}
    for name, write in WRITERS.items():
        root = tmp_path_factory.mktemp(name)
        out[name] = (root, write(root))
    return out


def _membership(dataset, root: Path) -> list[tuple[str, int]]:
    if hasattr(dataset, "paths"):
        return [(p.relative_to(root).as_posix(), y) for p, y in zip(dataset.paths, dataset.targets)]
    return [(str(i), y) for i, y in enumerate(dataset.targets)]


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_reader_membership_is_the_authors_split(roots, name):
    root, expected = roots[name]
    data = load_dataset(Config(dataset=name, data_root=str(root)).validate())
    assert data.num_classes == COUNTS[name]
    for split, dataset, targets in (("train", data.train, data.train_targets),
                                    ("test", data.test, data.test_targets)):
        assert _membership(dataset, root) == expected[split]
        assert targets.tolist() == [y for _, y in expected[split]]
    image, label = data.test[0]
    assert image.shape == (3, 224, 224) and label == expected["test"][0][1]


def test_cars_split_is_what_torchvision_stanford_cars_reads(roots):
    from torchvision.datasets import StanfordCars

    root, _ = roots["cars196"]
    data = load_dataset(Config(dataset="cars196", data_root=str(root)).validate())
    for split, ours in (("train", data.train), ("test", data.test)):
        theirs = StanfordCars(str(root), split=split)
        assert [(Path(p), y) for p, y in theirs._samples] == list(zip(ours.paths, ours.targets))
    assert data.class_names == StanfordCars(str(root), split="train").classes


def _constant(value: int, size=(12, 9)):
    from PIL import Image
    return Image.new("RGB", size, (value, value, value))


@pytest.mark.parametrize("recipe,stats", [("default", HALF), ("imagenet-a", IMAGENET),
                                          ("cub200", IMAGENET), ("cars196", None),
                                          ("eurosat", None)])
def test_transforms_give_the_hand_computed_values_on_a_flat_image(recipe, stats):
    # Resizing and cropping a flat image keep it flat (bicubic weights sum to 1), so
    # every output value is (v / 255 - mean) / std, or v / 255 without normalisation.
    train, test = build_transforms(RECIPES[recipe], 16)
    for transform in (train, test):
        out = transform(_constant(200))
        assert out.shape == (3, 16, 16)
        v = torch.full((3,), 200 / 255, dtype=torch.float64)
        if stats is not None:
            v = (v - torch.tensor(stats[0], dtype=torch.float64)) / torch.tensor(stats[1], dtype=torch.float64)
        # float32 arithmetic on values of order 1: a few ulps
        assert torch.allclose(out.double(), v.view(3, 1, 1).expand(3, 16, 16), atol=1e-6, rtol=0)


def test_squash_and_center_crop_follow_the_authors_geometry():
    from PIL import Image
    # left half black, right half white, 40x20: the squash to 8x8 keeps the halves
    # (columns 0-3 dark, 4-7 bright), where a shorter-side resize would crop them away
    img = np.zeros((20, 40, 3), dtype=np.uint8)
    img[:, 20:] = 255
    _, test = build_transforms(RECIPES["eurosat"], 8)
    out = test(Image.fromarray(img))
    assert out[0, :, :3].max() < 0.1 and out[0, :, 5:].min() > 0.9
    _, cars_test = build_transforms(RECIPES["cars196"], 8)  # short side 8 + centre crop 8
    out = cars_test(Image.fromarray(img))
    assert out[0, :, :3].max() < 0.1 and out[0, :, 5:].min() > 0.9 and out.shape == (3, 8, 8)


def test_uniform_transforms_key_keeps_the_earlier_single_recipe(roots):
    root, _ = roots["eurosat"]
    data = load_dataset(Config(dataset="eurosat", data_root=str(root), transforms="uniform").validate())
    image, _ = data.test[0]
    assert image.min() < 0  # [-1, 1] normalisation, where the authors' EuroSAT keeps [0, 1]
    authors = load_dataset(Config(dataset="eurosat", data_root=str(root)).validate())
    assert authors.test[0][0].min() >= 0


def test_cub_negative_pixels_are_fed_mammoths_uint8_overflow(tmp_path):
    """fed-mammoth's MyCUB200.__getitem__: Image.fromarray((img * 255).astype(np.int8),
    mode="RGB") on the uint8 image. Pillow up to 11.2 reads the int8 array's bytes as
    RGB, i.e. .view(np.uint8); Pillow 11.3+ refuses int8 arrays, so the bytes are taken
    here as it took them."""
    from PIL import Image

    from lorm.fcil.datasets.cub200 import Negative

    every = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
    theirs = (every * 255).astype(np.int8).view(np.uint8)
    ours = np.asarray(Negative(None)(Image.fromarray(every)))
    assert np.array_equal(ours, theirs)
    assert ours[0, :3, 0].tolist() == [0, 255, 254] and ours[-1, -1, 0] == 1  # 0, 1, 2; 255
    WRITERS["cub200"](tmp_path)
    official, negative = (load_dataset(Config(dataset="cub200", data_root=str(tmp_path),
                                              cub_pixels=pixels).validate())
                          for pixels in ("official", "negative"))
    with Image.open(official.test.paths[0]) as img:
        inverted = Image.fromarray((np.asarray(img.convert("RGB")) * 255).astype(np.int8)
                                   .view(np.uint8))
    torch.testing.assert_close(negative.test[0][0], official.test.transform(inverted),
                               rtol=0, atol=0)
    assert not torch.allclose(negative.test[0][0], official.test[0][0])


@pytest.mark.parametrize("name,missing", [
    ("imagenet-r", "imagenet-r/imagenet-r_test.yaml"), ("eurosat", "EuroSAT_RGB/split.json"),
    ("cub200", "CUB_200_2011/train_test_split.txt"), ("cars196", "stanford_cars/devkit/cars_meta.mat"),
    ("imagenet-a", "imagenet-a/test"), ("cifar100", "cifar-100-python/meta")])
def test_a_missing_file_is_named_with_the_expected_layout(tmp_path, name, missing):
    WRITERS[name](tmp_path)
    target = tmp_path / missing
    if target.is_dir():
        import shutil
        shutil.rmtree(target)
    else:
        target.unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(Config(dataset=name, data_root=str(tmp_path)).validate())
    assert str(target) in str(err.value) and "expected layout" in str(err.value)


def test_malformed_split_files_name_the_file(tmp_path):
    WRITERS["cub200"](tmp_path)
    split = tmp_path / "CUB_200_2011" / "train_test_split.txt"
    split.write_text("1 1\nnot a line\n")
    with pytest.raises(ValueError, match=f"{split} line 2 is malformed"):
        load_dataset(Config(dataset="cub200", data_root=str(tmp_path)).validate())
    WRITERS["eurosat"](tmp_path)
    (tmp_path / "EuroSAT_RGB" / "split.json").write_text('{"train": []}')
    with pytest.raises(ValueError, match="split.json is malformed"):
        load_dataset(Config(dataset="eurosat", data_root=str(tmp_path)).validate())
    WRITERS["imagenet-r"](tmp_path)
    listed = tmp_path / "imagenet-r" / "n01440764" / "art_0.jpg"
    listed.unlink()
    with pytest.raises(FileNotFoundError, match="images listed in .*imagenet-r_train.yaml are missing"):
        load_dataset(Config(dataset="imagenet-r", data_root=str(tmp_path)).validate())


def test_imagenet_r_resolves_the_yaml_paths_against_data_root():
    from lorm.fcil.datasets.imagenet_r import resolve_listed
    folder = Path("/data/imagenet-r")
    assert resolve_listed("../data/imagenet-r/n01443537/art_0.jpg", folder) == folder / "n01443537/art_0.jpg"
    assert resolve_listed("/x/imagenet-r/imagenet-r/n1/a.jpg", folder) == folder / "n1/a.jpg"
    assert resolve_listed("n1/a.jpg", folder) == folder / "n1/a.jpg"


def test_download_fetches_the_public_archive_and_names_what_stays_by_hand(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    fetched = []

    def fake_fetch(url, root, **kwargs):  # no network: unpack a tree as the archive would
        fetched.append(url)
        WRITERS["imagenet-r"](Path(root))
        for split in ("train", "test"):
            (Path(root) / "imagenet-r" / f"imagenet-r_{split}.yaml").unlink()

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_fetch)
    with pytest.raises(FileNotFoundError,
                       match="imagenet-r_train.yaml is missing.*--download fetches the tree only"):
        load_dataset(Config(dataset="imagenet-r", data_root=str(tmp_path), download=True).validate())
    assert fetched == ["https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar"]
