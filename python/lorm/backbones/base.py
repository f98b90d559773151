"""The model side as one small interface: a :class:`Backbone` builds a frozen
pretrained model with a classifier ``head``, names its LoRA target layers, turns a
batch into logits, and tells the statistics collectors which input rows are data.
For ``lorm export`` / ``lorm eval`` it also writes a deployed model in the family's
native format, with a card (:func:`read_card`), and loads it back.

The loop, clients, statistics and merges talk only to this interface; a model family
plugs in by subclassing :class:`Backbone` and registering a maker in
:mod:`lorm.backbones` (docs/architecture.md).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from ..pretrained import Weights

CARD_FILE = "lorm.json"  # the card of an exported folder
CARD_KEY = "lorm"        # the card of an exported .safetensors file, in its metadata


# dataset name -> its native input side (None: the backbone's own); installed by the
# dataset registry (lorm.fcil.datasets) on import, so that no backbone imports the data layer
_dataset_img_size: Callable[[str], int | None] | None = None


def set_dataset_img_size(lookup: Callable[[str], int | None]) -> None:
    """Installs ``lookup(dataset_name) -> native input side or None``, which
    :func:`img_size_for` asks when a config gives no ``img_size``."""
    global _dataset_img_size
    _dataset_img_size = lookup


def img_size_for(config) -> int | None:
    """The image side a model for ``config`` takes: ``config.img_size``, else its
    dataset's native side (8 for digits), else ``None`` (the backbone's own)."""
    if config.img_size:
        return config.img_size
    if _dataset_img_size is None:
        raise RuntimeError("no dataset registry is loaded (import lorm.fcil.datasets), so "
                           f"dataset {config.dataset!r}'s image size is unknown; or set img_size")
    return _dataset_img_size(config.dataset)


def to_device(batch: Any, device: torch.device) -> Any:
    """Moves a tensor, or every tensor in a (nested) dict / list / tuple, to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def init_head(head: nn.Linear, how: str, seed: int) -> None:
    """``"trunc_normal"``: timm's default classifier init (weights ~ N(0, 0.02) truncated
    at +-2, bias 0), seeded; ``"backbone"``: leave what the backbone's init made."""
    if how == "backbone":
        return
    if how != "trunc_normal":
        raise ValueError(f"head_init must be trunc_normal or backbone, got {how!r}")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = torch.randn(head.weight.shape, generator=gen) * 0.02
        head.weight.copy_(weight.clamp_(-2.0, 2.0))
        head.bias.zero_()


class Backbone(ABC):
    """A family of pretrained models (timm ViTs, BERT-style encoders, ...).

    ``build`` returns an ``nn.Module`` whose ``forward(inputs)`` gives logits
    ``(B, num_classes)`` and whose ``head`` is the classifier ``nn.Linear`` fed by the
    pooled feature ``(B, d)``. ``inputs`` is whatever the prepared dataset yields as
    its first element (an image tensor, a dict of token tensors).
    """

    #: suffixes of the module names that get LoRA when the config names none
    default_targets: tuple[str, ...] = ()

    @abstractmethod
    def weights(self, config) -> "Weights":
        """The weights ``config.pretrained`` names, found on disk (never downloaded):
        called before any data is read, so a missing file stops a run at once; its
        ``record()`` goes into summary.json."""

    @abstractmethod
    def build(self, config, num_classes: int) -> nn.Module:
        """The frozen pretrained model (weights loaded) with a fresh ``head``."""

    def prepare(self, dataset: Dataset, used: list[int]) -> Dataset:
        """The dataset as the model takes it (e.g. texts tokenised once), at least at
        the indices ``used`` (the samples the run reads; others may be left out); by
        default unchanged."""
        return dataset

    def check_input(self, model: nn.Module, sample: Any, source: str) -> None:
        """Refuses, before training starts, inputs the model cannot take."""

    def to_device(self, inputs: Any, device: torch.device) -> Any:
        """``inputs`` of one batch on ``device``."""
        return to_device(inputs, device)

    def by_length(self, dataset: Dataset, indices: list[int]) -> list[int] | None:
        """``indices`` reordered so that a batch holds inputs of about one size (less
        padding), for passes whose order is free (statistics sums, evaluation counts);
        ``None``: no such order (fixed-size inputs such as images)."""
        return None

    def cpu_bf16_pays(self, model: nn.Module) -> bool:
        """Whether ``model``'s forward and backward run faster under bfloat16 autocast on
        a CPU with native bfloat16 (``amp: auto`` asks; measured per family,
        benchmarks/results/amp-cpu.md). By default no."""
        return False

    def rows_mask(self, inputs: Any) -> torch.Tensor | None:
        """Which rows the LoRA layers see are data: a bool ``(B, L)`` mask over the
        layers' ``(B, L, d)`` inputs, or ``None`` when every row is (images)."""
        return None

    # -- the deployed model on disk (lorm export / lorm eval; the loop never calls these)
    #: the ``format`` of this family's exported models (their card says it)
    deployed_format: str | None = None
    #: what ``lorm export --out`` names: ``"file"`` or ``"folder"``
    export_layout: str = "file"

    def deployed_card(self, config, num_classes: int) -> dict:
        """What defines the deployed model of a run with ``config`` beyond its weights:
        ``format``, ``backbone``, ``num_classes`` and the family's own keys (input
        size, pooling, ...). An exported model fits a run when every key agrees."""
        if self.deployed_format is None:
            raise ValueError(f"backbone {config.backbone!r} ({type(self).__name__}) cannot "
                             "export a deployed model")
        return {"format": self.deployed_format, "backbone": config.backbone,
                "num_classes": num_classes}

    def save_deployed(self, model: nn.Module, card: dict, out: Path) -> None:
        """Writes ``model`` (as :meth:`build` made it, the LoRA residuals folded into
        its linear weights, no LoRA layers) at ``out`` in the family's native format,
        with ``card`` where :func:`read_card` finds it; nothing half-written is left
        under ``out``."""
        raise ValueError(f"{type(self).__name__} cannot export a deployed model")

    def load_deployed(self, path: Path) -> nn.Module:
        """The model :meth:`save_deployed` wrote at ``path``: ``forward(inputs)`` gives
        logits ``(B, num_classes)`` as the built model's does."""
        raise ValueError(f"{type(self).__name__} cannot load a deployed model")


def read_card(path: str | Path) -> dict:
    """The card of a model ``lorm export`` wrote: a folder's ``lorm.json``, or a
    ``.safetensors`` file's ``lorm`` metadata (a dict with ``format``, ``backbone``,
    ``num_classes``, ``tasks_done`` and the family's keys)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"exported model {path} not found (make one with `lorm export`)")
    if path.is_dir():
        try:
            card = json.loads((path / CARD_FILE).read_text())
        except (OSError, ValueError):
            card = None
    else:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                card = json.loads((f.metadata() or {}).get(CARD_KEY, "null"))
        except Exception as exc:  # safetensors' own error types
            raise ValueError(f"{path}: not a safetensors file ({exc})") from None
    if not isinstance(card, dict) or not str(card.get("format", "")).startswith("lorm-deployed"):
        raise ValueError(f"{path}: not a model exported by `lorm export` (no readable "
                         f"{CARD_FILE if path.is_dir() else CARD_KEY + ' metadata'} card)")
    return card


def build_lora(backbone: Backbone, config, num_classes: int):
    """``backbone``'s model with LoRA injected on ``config.targets`` (the family's
    default targets when null): ``(model, {name: LoRALinear}, head)``."""
    from ..lora import head_of, inject_lora

    model = backbone.build(config, num_classes)
    layers = inject_lora(model, config.rank, config.targets or backbone.default_targets)
    return model, layers, head_of(model)
