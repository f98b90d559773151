"""timm ViTs by name, the embedded tiny ViT, and pretrained weights read from a local
file or timm's cache (never downloaded); :class:`TimmViT` is their
:class:`~lorm.backbones.base.Backbone`. A deployed model is one ``.safetensors`` file:
the plain timm state dict, with the card in its ``lorm`` metadata."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..lora import DEFAULT_TARGETS, LoRALinear, head_of, inject_lora
from ..pretrained import Weights, resolve_weights
from .base import CARD_KEY, Backbone, img_size_for, init_head, read_card

TINY_VIT = dict(patch_size=2, in_chans=1, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0,
                weight_init="jax")


def build_backbone(name: str, num_classes: int, seed: int, img_size: int | None = None) -> nn.Module:
    """A timm VisionTransformer with a fresh ``num_classes`` head, initialised from ``seed``."""
    from ..optional import import_vision

    import_vision("timm", f"backbone {name!r} (a timm ViT)")
    from timm import create_model
    from timm.models.vision_transformer import VisionTransformer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "tiny-vit":
            return VisionTransformer(img_size=img_size or 8, num_classes=num_classes, **TINY_VIT)
        kwargs = {} if img_size is None else {"img_size": img_size}
        try:
            return create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
        except RuntimeError as exc:
            if "Unknown model" not in str(exc):
                raise
            raise ValueError(f"unknown backbone {name!r}: use 'tiny-vit', 'minilm', 'hf-bert', a "
                             "BERT folder or a timm model name (timm.list_models('vit_*'))") from None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors / the unpickler raise many types
        raise ValueError(f"{path}: cannot read weights ({type(exc).__name__}: {exc}); expected "
                         ".safetensors or a torch state dict (.pth/.pt/.bin)") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return state


def load_pretrained(model: nn.Module, path: str | Path) -> None:
    """Loads backbone weights from ``.safetensors``, ``.pth``/``.pt``/``.bin`` (a state
    dict, plain or under 'state_dict'/'model') or timm's ``.npz``; the classifier head
    is kept as it is. Shapes are checked; a mismatch lists the offending tensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {path} not found: put the backbone's "
                                ".safetensors/.npz/.pth file there or fix --set pretrained=...")
    if path.suffix == ".npz":
        if not hasattr(model, "load_pretrained"):
            raise ValueError(f"{path}: .npz weights need a timm VisionTransformer")
        model.load_pretrained(str(path))
        return
    state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith("head.")}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and v.shape != own[k].shape]
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if mismatched or missing or unexpected:
        raise ValueError(f"{path} does not fit the model: "
                         f"{len(mismatched)} shape mismatches {mismatched[:5]}, "
                         f"{len(missing)} missing {missing[:5]}, {len(unexpected)} unexpected "
                         f"{unexpected[:5]}")
    model.load_state_dict(state, strict=False)


def resolve_pretrained(backbone: str, pretrained: str | None) -> Path | None:
    """The weights file a config names (lorm.pretrained.resolve_weights); ``None``: random."""
    return resolve_weights(backbone, pretrained).path


def build_lora_model(backbone: str, num_classes: int, rank: int, targets: list[str], seed: int,
                     img_size: int | None = None, pretrained: str | None = None,
                     head_init: str = "trunc_normal"
                     ) -> tuple[nn.Module, dict[str, LoRALinear], nn.Linear]:
    """Backbone (+ weights) with LoRA injected: the model, its LoRA layers, its head."""
    model = build_backbone(backbone, num_classes, seed, img_size)
    weights = resolve_pretrained(backbone, pretrained)
    if weights is not None:
        load_pretrained(model, weights)
    init_head(head_of(model), head_init, seed)
    layers = inject_lora(model, rank, targets)
    return model, layers, head_of(model)


def check_input_fits(model: nn.Module, image: torch.Tensor, source: str) -> None:
    """Refuses images ``(C, H, W)`` that the model's patch embedding cannot take, before
    any training starts (a mismatch would otherwise crash mid-run)."""
    embed = getattr(model, "patch_embed", None)
    if embed is None:
        return
    channels, size = embed.proj.in_channels, tuple(embed.img_size)
    if image.dim() != 3 or image.shape[0] != channels:
        raise ValueError(f"{source} gives images of shape {tuple(image.shape)}, but the backbone "
                         f"takes {channels}-channel images: pick a backbone/dataset pair that "
                         "agree (the tiny ViT is 1-channel, for digits/Fashion-MNIST)")
    if tuple(image.shape[-2:]) != size:
        raise ValueError(f"{source} gives {image.shape[-2]}x{image.shape[-1]} images, but the "
                         f"backbone takes {size[0]}x{size[1]}: set img_size to match")


class TimmViT(Backbone):
    """timm VisionTransformers (and the shipped tiny ViT): images ``(B, C, H, W)`` in,
    every patch token is data (no row mask)."""

    default_targets = DEFAULT_TARGETS

    def cpu_bf16_pays(self, model: nn.Module) -> bool:
        """ViTs of width 384 and more (a LoRA training step of ViT-S/16 2.0x, ViT-B/16
        2.7x faster on a 2-core avx512_bf16 CPU; ViT-B/16 3.1x on an AMX Xeon); narrower
        ones get slower (timm's test ViT: 0.7x). benchmarks/results/amp-cpu.md."""
        return getattr(model, "embed_dim", 0) >= 384

    def build(self, config, num_classes: int) -> nn.Module:
        img_size = img_size_for(config)
        model = build_backbone(config.backbone, num_classes, config.seed, img_size)
        weights = self.weights(config).path
        if weights is not None:
            load_pretrained(model, weights)
        init_head(head_of(model), config.head_init, config.seed)
        return model

    def weights(self, config) -> Weights:
        return resolve_weights(config.backbone, config.pretrained)

    def check_input(self, model: nn.Module, sample, source: str) -> None:
        check_input_fits(model, sample, source)

    deployed_format = "lorm-deployed-v1"
    export_layout = "file"

    def deployed_card(self, config, num_classes: int) -> dict:
        """Adds ``img_size`` and the tiny ViT's timm arguments (``timm_kwargs``)."""
        return {**super().deployed_card(config, num_classes), "img_size": img_size_for(config),
                "timm_kwargs": TINY_VIT if config.backbone == "tiny-vit" else {}}

    def save_deployed(self, model: nn.Module, card: dict, out: Path) -> None:
        """One ``.safetensors`` file: the plain timm state dict (loads with
        ``strict=True`` into the model the card names), the card in its metadata."""
        from safetensors.torch import save_file

        out = Path(out)
        if out.is_dir():
            raise ValueError(f"{out} is a folder, but a {card['backbone']} run exports one "
                             ".safetensors file: give --out a file name")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={CARD_KEY: json.dumps(card)})
        tmp.replace(out)  # nothing half-written under the final name

    def load_deployed(self, path: Path) -> nn.Module:
        """A plain timm VisionTransformer with the file's weights (strict load)."""
        from safetensors.torch import load_file

        card = read_card(path)
        if card["format"] != self.deployed_format:
            raise ValueError(f"{path}: a {card['format']} export, not a timm ViT's "
                             f"({self.deployed_format})")
        model = build_backbone(card["backbone"], card["num_classes"], 0, card["img_size"])
        try:
            model.load_state_dict(load_file(str(path)), strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{path} does not fit a {card['backbone']} model: {exc}") from None
        return model
