"""One client's round: local training of the factor(s) the method names, then the
statistics pass that produces its ClientUpdate."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..backbones import Backbone
from ..lora import LoRALinear, train_factor
from ..stats import StatsCollector
from .config import STATS_PADDINGS


def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_locally(model: nn.Module, layers: dict[str, LoRALinear], head: nn.Linear, factor: str,
                  loader: DataLoader, task_classes: torch.Tensor, epochs: int,
                  lrs: dict[str, float], device: torch.device, amp: bool,
                  backbone: Backbone, progress: bool = False) -> float:
    """AdamW (no weight decay) on the trainable factor(s) and the head, with
    cross-entropy over the task's classes only. Returns the last epoch's mean loss."""
    train_factor(layers, factor)
    groups = [{"params": [getattr(l, f) for l in layers.values()], "lr": lrs[f]}
              for f in factor]
    groups.append({"params": list(head.parameters()), "lr": lrs["head"]})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    label_of = torch.full((head.out_features,), -1, dtype=torch.long, device=device)
    label_of[task_classes] = torch.arange(len(task_classes), device=device)
    model.train()
    loss_sum, batches = 0.0, 0
    for epoch in range(epochs):
        loss_sum, batches = 0.0, 0
        for x, y in tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not progress):
            x, y = backbone.to_device(x, device), y.to(device)
            with autocast(device, amp):
                logits = model(x)[:, task_classes]
            loss = F.cross_entropy(logits.float(), label_of[y])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum, batches = loss_sum + loss.item(), batches + 1
    train_factor(layers, None)
    return loss_sum / max(batches, 1)


@torch.no_grad()
def collect_statistics(model: nn.Module, layers: dict[str, LoRALinear], head: nn.Linear | None,
                       mode: str, loader: DataLoader, passes: int, device: torch.device,
                       amp: bool, backbone: Backbone, padding: str = "exclude") -> StatsCollector:
    """Eval-mode forward passes over the client's data with the collectors attached.
    ``padding``: ``"exclude"`` feeds the Grams only the rows the backbone marks as data
    (``rows_mask``); ``"include"`` and ``"include-split"`` feed every row the layers see
    (the backbone decides how wide a batch is: ``HFEncoder.to_device``)."""
    if padding not in STATS_PADDINGS:
        raise ValueError(f"stats_padding must be one of {STATS_PADDINGS}, got {padding!r}")
    model.eval()
    with StatsCollector(layers, mode, head) as stats:
        for _ in range(passes):
            for x, _ in loader:
                x = backbone.to_device(x, device)
                stats.mask = backbone.rows_mask(x) if padding == "exclude" else None
                with autocast(device, amp):
                    model(x)
    return stats
