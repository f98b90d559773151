"""LoRA linear layers for any backbone's nn.Linear: ``y = x @ (W0 + delta + B @ A).T + bias``.

No scaling factor (lorm-math.md). ``W0`` and the bias are frozen; ``A`` ``(r, d)`` and
``B`` ``(o, r)`` are the trainable factors, of which :func:`train_factor` switches
which one trains. ``delta`` is an optional fixed dense residual ``(o, d)``: the
deployed model's merged residual, or a method's residual accumulated within a task.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_TARGETS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` ``(o, d)`` plus a rank-``r`` residual ``B @ A``.

    Args:
        base: the pretrained linear layer; its weight and bias are kept, frozen.
        rank: ``r``, at most ``min(o, d)``.
    """

    def __init__(self, base: nn.Linear, rank: int):
        super().__init__()
        o, d = base.weight.shape
        if not 1 <= rank <= min(o, d):
            raise ValueError(f"rank must be in [1, {min(o, d)}] for a {o}x{d} layer, got {rank}")
        self.weight = nn.Parameter(base.weight.detach().clone(), requires_grad=False)
        self.bias = (None if base.bias is None
                     else nn.Parameter(base.bias.detach().clone(), requires_grad=False))
        self.A = nn.Parameter(torch.zeros(rank, d, dtype=base.weight.dtype))
        self.B = nn.Parameter(torch.zeros(o, rank, dtype=base.weight.dtype))
        self.register_buffer("delta", None)
        self.lora_enabled = True

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight if self.delta is None else self.weight + self.delta
        y = F.linear(x, weight, self.bias)
        if self.lora_enabled:
            y = y + F.linear(F.linear(x, self.A), self.B)
        return y

    def residual(self) -> torch.Tensor:
        """``B @ A`` ``(o, d)``: this layer's current LoRA residual."""
        return (self.B @ self.A).detach()

    def served_residual(self) -> torch.Tensor:
        """``(o, d)``: everything this layer adds to ``W0`` right now (``delta``, plus
        ``B @ A`` while the LoRA term is on)."""
        out = self.residual() if self.lora_enabled else torch.zeros_like(self.weight)
        return out if self.delta is None else out + self.delta

    def set_factors(self, a: torch.Tensor | None = None, b: torch.Tensor | None = None) -> None:
        """Overwrites ``A`` ``(r, d)`` and/or ``B`` ``(o, r)`` in place (shapes must match)."""
        with torch.no_grad():
            for name, value in (("A", a), ("B", b)):
                if value is None:
                    continue
                param = getattr(self, name)
                if value.shape != param.shape:
                    raise ValueError(f"{name} must be {tuple(param.shape)}, got {tuple(value.shape)}")
                param.copy_(value.to(param.dtype))

    def deploy(self, delta: torch.Tensor | None) -> None:
        """Serve ``W0 + delta`` (LoRA term off); ``None`` serves ``W0`` alone."""
        self.set_delta(delta)
        self.lora_enabled = False

    def set_delta(self, delta: torch.Tensor | None) -> None:
        if delta is not None and delta.shape != self.weight.shape:
            raise ValueError(f"delta must be {tuple(self.weight.shape)}, got {tuple(delta.shape)}")
        self.delta = None if delta is None else delta.detach().to(self.weight)

    def extra_repr(self) -> str:
        o, d = self.weight.shape
        return f"in_features={d}, out_features={o}, rank={self.rank}"


@contextmanager
def serving(layers: dict[str, "LoRALinear"], residuals: dict[str, torch.Tensor]) -> Iterator[None]:
    """Within the block each layer serves ``W0 + residuals[name]`` (LoRA term off); on
    exit every layer's ``delta`` and LoRA switch are as before. ``A`` and ``B`` are not
    touched, so statistics that need ``A`` still see it."""
    saved = {name: (layer.delta, layer.lora_enabled) for name, layer in layers.items()}
    try:
        for name, layer in layers.items():
            layer.deploy(residuals[name])
        yield
    finally:
        for name, layer in layers.items():
            layer.set_delta(saved[name][0])
            layer.lora_enabled = saved[name][1]


def kaiming_uniform(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """``nn.Linear``'s default init (Kaiming-uniform, a = sqrt(5)), from ``generator``."""
    out = torch.empty(shape)
    nn.init.kaiming_uniform_(out, a=math.sqrt(5), generator=generator)
    return out


def inject_lora(model: nn.Module, rank: int,
                targets: Iterable[str] = DEFAULT_TARGETS) -> dict[str, LoRALinear]:
    """Replaces every ``nn.Linear`` whose qualified name ends with one of ``targets``
    by a :class:`LoRALinear`, freezes every other parameter except the classifier head,
    and returns the LoRA layers by name (in module order)."""
    targets = tuple(targets)
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and n.endswith(targets)]
    if not names:
        raise ValueError(f"no nn.Linear in the model matches the LoRA targets {targets}")
    for param in model.parameters():
        param.requires_grad_(False)
    layers = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = LoRALinear(getattr(parent, child), rank)
        setattr(parent, child, layer)
        layers[name] = layer
    for param in head_of(model).parameters():
        param.requires_grad_(True)
    return layers


def head_of(model: nn.Module) -> nn.Linear:
    """The classifier ``nn.Linear`` of a backbone's model (``model.head``)."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise ValueError("the model has no nn.Linear `head` (a lorm backbone's model expected)")
    return head


def train_factor(layers: dict[str, LoRALinear], factor: str | None) -> None:
    """Makes ``"A"``, ``"B"``, ``"AB"`` (both) or ``None`` (neither) trainable."""
    if factor not in ("A", "B", "AB", None):
        raise ValueError(f"factor must be 'A', 'B', 'AB' or None, got {factor!r}")
    for layer in layers.values():
        layer.lora_enabled = True
        layer.A.requires_grad_(factor is not None and "A" in factor)
        layer.B.requires_grad_(factor is not None and "B" in factor)
