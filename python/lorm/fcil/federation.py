"""What a config describes, built once per process: the model family, its weights, the
method, the benchmark (data cut into tasks and clients) and the LoRA model. The Server
and the Clients are built from it (lorm.fcil.server, lorm.fcil.client)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..backbones import Backbone, make_backbone
from ..backbones.base import build_lora
from ..lora import LoRALinear
from ..precision import autocast_dtype
from ..pretrained import Weights
from .config import Config
from .data import Benchmark, build_benchmark
from .methods import Method, make_method
from .randomness import SETUP, drawn_from


@dataclass
class Federation:
    """A config made concrete.

    Attributes:
        config, device: as given.
        backbone: the model family (lorm.backbones).
        weights: the backbone weights the config names, found on disk.
        method: the federated method object (lorm.fcil.methods).
        bench: the data, prepared for the backbone, cut into tasks and clients.
        model, layers, head: a LoRA model on ``device`` ({name: LoRALinear}, its head).
        amp: the autocast dtype of every forward (``None``: float32; lorm.precision).
    """

    config: Config
    device: torch.device
    backbone: Backbone
    weights: Weights
    method: Method
    bench: Benchmark
    model: nn.Module
    layers: dict[str, LoRALinear]
    head: nn.Linear
    amp: torch.dtype | None


def build_federation(config: Config, device: torch.device) -> Federation:
    """Weights first (a missing file stops the run before any data is read), then the
    data, the model, and the check that the model takes the data; every random draw of
    the set-up comes from the config's seed."""
    with drawn_from([config.seed, SETUP], device):  # e.g. check_input's transformed sample
        backbone = make_backbone(config.backbone)
        weights = backbone.weights(config)
        method = make_method(config)
        bench = build_benchmark(config)
        model, layers, head = build_lora(backbone, config, bench.num_classes)
        used = {"train": sorted({i for task in bench.client_indices for c in task for i in c}),
                "test": sorted({i for task in bench.test_indices for i in task})}
        bench.train = backbone.prepare(bench.train, used["train"])
        bench.test = backbone.prepare(bench.test, used["test"])
        for split, data in (("train", bench.train), ("test", bench.test)):
            backbone.check_input(model, data[used[split][0]][0],
                                 f"dataset {config.dataset!r} ({split})")
    amp = autocast_dtype(config.amp, device, backbone.cpu_bf16_pays(model))
    bench = method.benchmark(bench)
    if config.pass_order == "by-length":  # counts do not depend on the order of the samples
        bench.test_indices = [backbone.by_length(bench.test, ix) or ix for ix in bench.test_indices]
    return Federation(config, device, backbone, weights, method, bench, model.to(device),
                      layers, head, amp)
