"""The dataset registry: readers by name, LoadedDataset's checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from lorm.fcil.config import Config
from lorm.fcil.datasets import READERS, LoadedDataset, add_reader, default_img_size, load_dataset


def _tensors(labels: list[int]) -> TensorDataset:
    return TensorDataset(torch.zeros(len(labels), 1), torch.tensor(labels))


def test_loaded_dataset_refuses_targets_that_do_not_fit_the_split():
    with pytest.raises(ValueError, match=r"train targets have shape \(2,\), expected \(3,\)"):
        LoadedDataset(_tensors([0, 1, 0]), _tensors([1]), ["a", "b"], [0, 1], [1])
    with pytest.raises(ValueError, match=r"test labels span \[0, 2\], outside \[0, 2\)"):
        LoadedDataset(_tensors([0, 1]), _tensors([0, 2]), ["a", "b"], [0, 1], [0, 2])


def test_a_registered_reader_is_what_load_dataset_calls(monkeypatch):
    class Toy:
        img_size = 5

        def load(self, config):
            return LoadedDataset(_tensors([0, 1]), _tensors([1]), ["x", "y"], [0, 1], [1])

    monkeypatch.setitem(READERS, "toy", Toy())
    config = Config(dataset="toy").validate()  # the registry decides what validate accepts
    data = load_dataset(config)
    assert data.num_classes == 2 and data.train_targets.dtype == np.int64
    assert default_img_size(config) == 5
    with pytest.raises(ValueError, match="'toy' is registered twice"):
        add_reader("toy", Toy())


def test_an_unknown_dataset_lists_the_registered_ones():
    with pytest.raises(ValueError, match="dataset = 'nope': must be one of .*digits"):
        Config(dataset="nope").validate()


def test_digits_reader_targets_are_the_labels_it_yields():
    data = load_dataset(Config().validate())
    assert data.train_targets.tolist() == data.train.tensors[1].tolist()
    assert data.num_classes == 10 and default_img_size(Config()) == 8
