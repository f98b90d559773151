"""Statistic collectors: forward hooks that stream each layer's input rows through
the lorm_ext kernels while the model runs.

Per LoRA layer, by mode:

- ``"diag"``: ``diag(G)`` ``(d,)`` (A-step with alpha = 0, end-of-task with alpha = 0);
- ``"full"``: ``G`` ``(d, d)`` (alpha > 0);
- ``"lowrank"``: ``Z.T Z`` ``(r, r)`` with ``Z = X A.T`` and ``diag(G)`` (B-step), never
  forming ``(d, d)``.

The head's input (the penultimate features) always gets its full Gram. Inputs arrive
in whatever dtype the forward runs in (bf16/fp16 under autocast): no up-cast copies.

Which rows are data: a layer sees ``(B, L, d)`` inputs; before each forward the caller
may set :attr:`StatsCollector.mask`, a bool ``(B, L)`` from the backbone
(``Backbone.rows_mask``), and only the rows it marks go into the Grams (padded text
tokens are not data). ``None`` (images, or ``stats_padding: include`` / ``include-split``)
takes every row with no copy.
"""

from __future__ import annotations

import torch
from torch import nn

import lorm_ext

from .lora import LoRALinear

MODES = ("diag", "full", "lowrank")


class StatsCollector:
    """Registers the hooks on construction; :meth:`remove` (or leaving the ``with``
    block) takes them off and leaves the model exactly as it was.

    Args:
        layers: LoRA layers by name.
        mode: one of ``"diag"``, ``"full"``, ``"lowrank"``.
        head: the classifier; its input Gram is collected when given.
        acc_dtype: accumulator dtype (float32 or float64). By default ``(d, d)`` Grams
            accumulate in float32 (a float32 GEMM per batch, as the reference
            implementation does, instead of converting every row to float64) and the
            small ``(d,)`` and ``(r, r)`` statistics in float64.
    """

    def __init__(self, layers: dict[str, LoRALinear], mode: str, head: nn.Linear | None = None,
                 acc_dtype: torch.dtype | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.acc_dtype = acc_dtype or (torch.float32 if mode == "full" else torch.float64)
        self.head_dtype = acc_dtype or torch.float32
        self.grams: dict[str, torch.Tensor] = {}       # name -> (d,) or (d, d)
        self.projected: dict[str, torch.Tensor] = {}   # name -> Z.T Z (r, r), lowrank mode
        self.head_gram: torch.Tensor | None = None
        self.rows = 0
        self._mask: torch.Tensor | None = None         # (B, L) bool: rows that are data
        self._rows: torch.Tensor | None = None         # (n,) flat indices of its True rows
        self._handles = [layer.register_forward_hook(self._layer_hook(name))
                         for name, layer in layers.items()]
        if head is not None:
            self._handles.append(head.register_forward_hook(self._head_hook))

    def _acc(self, store: dict, key: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        if key not in store:
            store[key] = torch.zeros(shape, dtype=self.acc_dtype, device=like.device)
        return store[key]

    @property
    def mask(self) -> torch.Tensor | None:
        """``(B, L)`` bool: the input rows of the next forward that are data (None: all)."""
        return self._mask

    @mask.setter
    def mask(self, mask: torch.Tensor | None) -> None:
        # One nonzero per batch: every hooked layer then gathers with index_select, several
        # times faster than boolean indexing, which searches the mask again per layer.
        self._mask = mask
        self._rows = None if mask is None else mask.reshape(-1).nonzero().squeeze(1)

    def _data_rows(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """``x`` ``(B, L, d)`` -> the rows :attr:`mask` marks, ``(n, d)``; all of ``x``
        when there is no mask."""
        if self._mask is None:
            return x
        if x.shape[:-1] != self._mask.shape:
            raise ValueError(f"{name}: the row mask is {tuple(self._mask.shape)} but the layer "
                             f"sees inputs {tuple(x.shape)}; expected mask = inputs.shape[:-1]")
        return x.reshape(-1, x.shape[-1]).index_select(0, self._rows)

    def _layer_hook(self, name: str):
        def hook(module: LoRALinear, inputs, output):
            x = self._data_rows(inputs[0].detach(), name)
            d = x.shape[-1]
            if self.mode == "diag":
                lorm_ext.gram_update(self._acc(self.grams, name, (d,), x), x)
            elif self.mode == "full":
                lorm_ext.gram_update(self._acc(self.grams, name, (d, d), x), x)
            else:
                r = module.rank
                lorm_ext.lowrank_gram_update(self._acc(self.projected, name, (r, r), x), x,
                                             module.A.detach(), self._acc(self.grams, name, (d,), x))
        return hook

    def _head_hook(self, module: nn.Linear, inputs, output):
        x = inputs[0].detach()
        if self.head_gram is None:
            self.head_gram = torch.zeros(x.shape[-1], x.shape[-1], dtype=self.head_dtype,
                                         device=x.device)
        lorm_ext.gram_update(self.head_gram, x)
        self.rows += x.reshape(-1, x.shape[-1]).shape[0]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> "StatsCollector":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
