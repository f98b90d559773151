"""Supervised pretraining of the embedded tiny ViT on Fashion-MNIST (``lorm pretrain``).

The result is the backbone the digits benchmark starts from by default, as the paper's
runs start from an ImageNet-21k ViT: pretrained centrally on other data (clothes, not
digits), then adapted with federated LoRA. It ships in ``lorm/weights/`` as a
``.safetensors`` file with a JSON card that records how it was made and its sha256.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .backbones import make_backbone
from .backbones.timm_vit import TINY_VIT
from .fcil.config import Config
from .fcil.datasets import fashion_mnist
from .pretrained import SHIPPED_NAME, TINY_VIT_NAME, sha256_of

IMG_SIZE = 8


def shift_augment(x: torch.Tensor, gen: torch.Generator, pad: int = 1) -> torch.Tensor:
    """Each image ``(n, c, h, w)`` moved by up to ``pad`` pixels along each axis; the
    uncovered border is background (-1)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), value=-1.0)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    out = torch.empty_like(x)
    for sy in range(2 * pad + 1):
        for sx in range(2 * pad + 1):
            chosen = (dy == sy) & (dx == sx)
            out[chosen] = padded[chosen, :, sy:sy + h, sx:sx + w]
    return out


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    correct = sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
                  for i in range(0, len(x), batch))
    return correct / len(x)


def pretrain(data_root: str | None, output: Path, epochs: int = 30, seed: int = 0,
             batch_size: int = 256, lr: float = 2e-3, quiet: bool = False) -> dict:
    """Trains the tiny ViT on Fashion-MNIST; writes ``<output>/tiny-vit-fmnist.safetensors``
    (backbone only, no classifier head) and ``.json`` (the card). Returns the card."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    train, test, num_classes = fashion_mnist.load(data_root, IMG_SIZE)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    x_train, y_train = train.tensors
    x_test, y_test = test.tensors
    # through the registry like any run's model: random weights, timm's own head init
    config = Config(backbone=TINY_VIT_NAME, pretrained="none", img_size=IMG_SIZE, seed=seed,
                    head_init="backbone").validate()
    model = make_backbone(config.backbone).build(config, num_classes)
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * math.ceil(len(x_train) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps,
                                                   pct_start=0.1)
    start = time.perf_counter()
    for epoch in tqdm(range(epochs), desc="pretraining", disable=quiet):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        for i in tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch}", leave=False,
                      disable=quiet):
            batch = order[i:i + batch_size]
            loss = F.cross_entropy(model(shift_augment(x_train[batch], gen)), y_train[batch],
                                   label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    seconds = time.perf_counter() - start
    test_accuracy = accuracy(model, x_test, y_test)
    weights = output / f"{SHIPPED_NAME}.safetensors"
    backbone = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("head.")}
    save_file(backbone, str(weights))
    card = {
        "name": SHIPPED_NAME,
        "source_data": "Fashion-MNIST (Xiao et al. 2017), 60,000 train / 10,000 test, 10 classes",
        "preprocessing": f"28x28 grey -> {IMG_SIZE}x{IMG_SIZE} by area averaging, scaled to "
                         "[-1, 1] (as the digits benchmark); train: random shifts of up to 1 pixel",
        "architecture": {"timm": "VisionTransformer", "img_size": IMG_SIZE, **TINY_VIT},
        "training": {"epochs": epochs, "batch_size": batch_size, "optimizer": "AdamW",
                     "lr": lr, "schedule": "one-cycle", "weight_decay": 0.05,
                     "label_smoothing": 0.1, "seed": seed, "seconds": round(seconds, 1),
                     "torch": torch.__version__, "threads": torch.get_num_threads()},
        "test_accuracy": test_accuracy,
        "contents": "backbone only (classifier head left out)",
        "sha256": sha256_of(weights),
    }
    (output / f"{SHIPPED_NAME}.json").write_text(json.dumps(card, indent=1) + "\n")
    return card
