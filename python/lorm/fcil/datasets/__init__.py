"""The dataset registry: each dataset name maps to a reader object with one method,
``load(config) -> LoadedDataset``. The loop and the partition never branch on the name.

Adding a dataset (docs/datasets.md)::

    from lorm.fcil.datasets import LoadedDataset, register

    @register("my-data")
    class MyData:
        img_size = None          # default model input side; None: the backbone's own
        def load(self, config) -> LoadedDataset: ...

and import its module at the bottom of this file. Datasets yield ``(input, label)``
pairs; the input may be any type the backbone takes (an image tensor, a dict of
tensors for text): nothing here looks at it.
"""

from .registry import (READERS, DatasetReader, LoadedDataset, add_reader, dataset_names,
                       default_img_size, download_if_asked, load_dataset, reader, register,
                       require_root)

# the readers register themselves on import (one module per on-disk format)
from . import cars196, cifar100, clinc150, cub200, digits, eurosat, fashion_mnist, image_folder, imagenet_r  # noqa: E402,F401,I001

__all__ = ["READERS", "DatasetReader", "LoadedDataset", "add_reader", "dataset_names",
           "default_img_size", "download_if_asked", "load_dataset", "reader", "register",
           "require_root"]
