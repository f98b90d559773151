"""Backbones by config: a registry from ``backbone`` names to :class:`Backbone` makers.

``make_backbone(config)`` picks the adapter; the loop never branches on modality.
A name not in the registry is a timm model (or a folder with a BERT ``config.json``,
which goes to the Hugging Face encoder adapter). ``deployed_backbone(card)`` picks the
adapter that reads a model ``lorm export`` wrote, by its card's ``format``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .base import Backbone, read_card, to_device

_MAKERS: dict[str, Callable[[], Backbone]] = {}


def register_backbone(name: str, maker: Callable[[], Backbone]) -> None:
    """Makes ``backbone: <name>`` build ``maker()``."""
    _MAKERS[name] = maker


def make_backbone(name: str) -> Backbone:
    """The adapter for a config's ``backbone`` value."""
    if name in _MAKERS:
        return _MAKERS[name]()
    if (Path(name) / "config.json").is_file():
        from .hf_encoder import HFEncoder
        return HFEncoder(default_folder=name)
    from .timm_vit import TimmViT
    return TimmViT()


def deployed_backbone(card: dict) -> Backbone:
    """The registered adapter whose exports have ``card["format"]`` (:func:`read_card`)."""
    for maker in _MAKERS.values():
        backbone = maker()
        if backbone.deployed_format == card.get("format"):
            return backbone
    raise ValueError(f"no backbone reads exported models of format {card.get('format')!r}")


def _register_builtin() -> None:
    from .hf_encoder import HFEncoder, minilm_folder
    from .timm_vit import TimmViT

    register_backbone("minilm", lambda: HFEncoder(default_folder=minilm_folder))
    register_backbone("hf-bert", lambda: HFEncoder(default_folder=None))
    register_backbone("tiny-vit", TimmViT)


_register_builtin()

__all__ = ["Backbone", "deployed_backbone", "make_backbone", "read_card", "register_backbone",
           "to_device"]
