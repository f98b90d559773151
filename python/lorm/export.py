"""The deployed model of a run in its family's native format (``lorm export``), and its
accuracy recomputed (``lorm eval``), for any registered backbone.

The deployed model after task t is ``W0 + dW_merged`` with the merged head: the run's
backbone builds its pretrained model (:meth:`~lorm.backbones.Backbone.build`), every
LoRA layer's merged residual folds into its ``nn.Linear`` weight, and the backbone
writes the result as its family does (:meth:`~lorm.backbones.Backbone.save_deployed`):
a timm ViT as one ``.safetensors`` state dict that loads with ``strict=True``, a
BERT-family encoder as a folder that ``transformers.AutoModel.from_pretrained`` loads,
with ``head.safetensors`` and ``lorm.json``. Each carries a card
(:func:`~lorm.backbones.read_card`) saying how to build the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .backbones import Backbone, deployed_backbone, make_backbone, read_card
from .fcil import checkpoint
from .fcil.config import Config
from .lora import head_of


@dataclass
class RunState:
    """A finished run's checkpoint, read: its config, tensors, adapter and the card
    of its deployed model (``tasks_done`` included)."""

    config: Config
    tensors: dict[str, torch.Tensor]
    backbone: Backbone
    card: dict


def run_state(run_dir: str | Path) -> RunState:
    """The newest whole checkpoint of ``run_dir``, which must follow a task's end."""
    tensors, state = checkpoint.load(Path(run_dir))
    config = Config(**state["config"]).validate()
    progress = state["progress"]
    if not progress["acc"] or progress["round"] != 0 or progress["phase"] != "round":
        raise ValueError(f"{run_dir}: the last checkpoint is inside task {progress['task']}; "
                         "export works on a run whose last checkpoint follows a task's end "
                         "(a finished run, or one stopped between tasks)")
    backbone = make_backbone(config.backbone)
    card = {**backbone.deployed_card(config, tensors["head.weight"].shape[0]),
            "tasks_done": len(progress["acc"])}
    return RunState(config, tensors, backbone, card)


def fold_residuals(model: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """Puts a checkpoint's deployed state into ``model`` (as the backbone built it, no
    LoRA layers): each ``<layer>.delta`` ``(o, d)`` is added to that ``nn.Linear``'s
    weight (``W0 + delta``, what the run's LoRA layer served), and ``head.weight``
    ``(C, d)`` / ``head.bias`` ``(C,)`` replace the head's."""
    layers = sorted(k[:-len(".A")] for k in tensors
                    if k.endswith(".A") and not k.startswith(("merger/", "history/")))
    with torch.no_grad():
        for name in layers:
            delta = tensors.get(f"{name}.delta")
            if delta is None:
                continue
            try:
                linear = model.get_submodule(name)
            except AttributeError:
                linear = None
            if not isinstance(linear, nn.Linear) or linear.weight.shape != delta.shape:
                raise ValueError(f"the checkpoint's LoRA layer {name} {tuple(delta.shape)} is "
                                 "not a linear layer of this backbone's model")
            linear.weight.copy_(linear.weight + delta.to(linear.weight))
        head = head_of(model)
        head.weight.copy_(tensors["head.weight"].to(head.weight))
        head.bias.copy_(tensors["head.bias"].to(head.bias))
    return model


def deployed_model(run_dir: str | Path) -> tuple[nn.Module, RunState]:
    """The deployed model of ``run_dir`` after its last finished task (eval mode), and
    the run's state."""
    state = run_state(run_dir)
    model = state.backbone.build(state.config, state.card["num_classes"])
    return fold_residuals(model, state.tensors).eval(), state


def export(run_dir: str | Path, out: str | Path) -> dict:
    """Writes the deployed model of ``run_dir`` at ``out`` (a ``.safetensors`` file for a
    timm ViT, a folder for a text encoder); returns its card."""
    model, state = deployed_model(run_dir)
    state.backbone.save_deployed(model, state.card, Path(out))
    return state.card


def build_exported_model(path: str | Path) -> nn.Module:
    """The model ``lorm export`` wrote at ``path``, built by the adapter its card's
    format names: a plain timm VisionTransformer (strict load) or a text classifier
    over the folder's encoder and head. ``forward(inputs)`` gives ``(B, num_classes)``."""
    return deployed_backbone(read_card(path)).load_deployed(Path(path))


def evaluate(run_dir: str | Path, weights: str | Path | None = None) -> list[float]:
    """The accuracy on every task's test data after the run's last finished task,
    recomputed from the checkpoint, or from an exported model ``weights`` (which must be
    for this run's model: every key of its card but ``tasks_done`` agrees)."""
    from .fcil.loop import Run

    run_dir = Path(run_dir)
    if weights is None:
        model, state = deployed_model(run_dir)
    else:
        state = run_state(run_dir)
        theirs = read_card(weights)
        mismatch = {k: (theirs.get(k), v) for k, v in state.card.items()
                    if k != "tasks_done" and theirs.get(k) != v}
        if mismatch:
            raise ValueError(f"{weights} is for a different model than {run_dir}: "
                             + ", ".join(f"{k} {a!r} vs {b!r}" for k, (a, b) in mismatch.items()))
        model = state.backbone.load_deployed(Path(weights))
    runner = Run(state.config, run_dir, quiet=True)
    model.to(runner.device)
    last = state.card["tasks_done"] - 1
    return [runner.accuracy(j, last, model) for j in range(last + 1)]
