"""The deployed model of a run as a plain timm state dict (``lorm export``), and its
accuracy recomputed from disk (``lorm eval``).

The deployed model after task t is ``W0 + dW_merged`` with the merged head: every LoRA
layer folds into its ``nn.Linear`` weight, so the file loads with ``strict=True`` into
the timm model it names, with no lorm code in the way. The file's safetensors metadata
(``lorm``) says how to build that model (:func:`build_exported_model`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .fcil import checkpoint
from .fcil.config import Config
from .backbones.timm_vit import TINY_VIT, build_backbone, load_pretrained, resolve_pretrained

FORMAT = "lorm-deployed-v1"


def _img_size(config: Config) -> int | None:
    from .fcil.datasets import default_img_size
    return default_img_size(config)


def _layer_names(tensors: dict[str, torch.Tensor]) -> list[str]:
    return sorted(k[:-2] for k in tensors if k.endswith(".A") and not k.startswith(("merger/",
                                                                                     "history/")))


def deployed_state(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The deployed model's state dict and the metadata that says how to build it."""
    tensors, state = checkpoint.load(Path(run_dir))
    config = Config(**state["config"]).validate()
    progress = state["progress"]
    if not progress["acc"] or progress["round"] != 0 or progress["phase"] != "round":
        raise ValueError(f"{run_dir}: the last checkpoint is inside task {progress['task']}; "
                         "export works on a run whose last checkpoint follows a task's end "
                         "(a finished run, or one stopped between tasks)")
    num_classes = tensors["head.weight"].shape[0]
    model = build_backbone(config.backbone, num_classes, config.seed, _img_size(config))
    weights = resolve_pretrained(config.backbone, config.pretrained)
    if weights is not None:
        load_pretrained(model, weights)
    state_dict = {k: v.clone() for k, v in model.state_dict().items()}
    for name in _layer_names(tensors):
        delta = tensors.get(f"{name}.delta")
        if delta is not None:
            state_dict[f"{name}.weight"] = state_dict[f"{name}.weight"] + delta.to(torch.float32)
    state_dict["head.weight"] = tensors["head.weight"].to(torch.float32)
    state_dict["head.bias"] = tensors["head.bias"].to(torch.float32)
    meta = {"format": FORMAT, "backbone": config.backbone, "num_classes": num_classes,
            "img_size": _img_size(config), "tasks_done": len(progress["acc"]),
            "timm_kwargs": TINY_VIT if config.backbone == "tiny-vit" else {}}
    return state_dict, meta


def export(run_dir: str | Path, out: str | Path) -> dict:
    """Writes the deployed model of ``run_dir`` to ``out`` (.safetensors); returns its metadata."""
    state_dict, meta = deployed_state(run_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp),
              metadata={"lorm": json.dumps(meta)})
    tmp.replace(out)  # nothing half-written under the final name
    return meta


def read_exported(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model {path} not found (make one with `lorm export`)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("lorm", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors' own error types
        raise ValueError(f"{path}: not a safetensors file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a model exported by `lorm export` (no {FORMAT} metadata)")
    return tensors, meta


def build_exported_model(path: str | Path) -> nn.Module:
    """A plain timm VisionTransformer with the exported weights (strict load)."""
    tensors, meta = read_exported(path)
    model = build_backbone(meta["backbone"], meta["num_classes"], 0, meta["img_size"])
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not fit a {meta['backbone']} model: {exc}") from None
    return model


def evaluate(run_dir: str | Path, weights: str | Path | None = None) -> list[float]:
    """The accuracy on every task's test data after the run's last finished task,
    recomputed from the checkpoint (or from an exported file, which must be for this
    run's backbone and classes)."""
    from .fcil.loop import Run

    run_dir = Path(run_dir)
    state_dict, meta = deployed_state(run_dir)
    if weights is not None:
        tensors, theirs = read_exported(weights)
        mismatch = {k: (theirs.get(k), meta[k]) for k in ("backbone", "num_classes", "img_size")
                    if theirs.get(k) != meta[k]}
        if mismatch:
            raise ValueError(f"{weights} is for a different model than {run_dir}: "
                             + ", ".join(f"{k} {a!r} vs {b!r}" for k, (a, b) in mismatch.items()))
        state_dict = tensors
    _, state = checkpoint.load(run_dir)
    runner = Run(Config(**state["config"]).validate(), run_dir, quiet=True)
    model = build_backbone(meta["backbone"], meta["num_classes"], 0, meta["img_size"])
    model.load_state_dict(state_dict, strict=True)
    model.to(runner.device)
    last = meta["tasks_done"] - 1
    return [runner.accuracy(j, last, model) for j in range(last + 1)]
