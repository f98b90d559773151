"""Run configuration: a dataclass, YAML presets under configs/, ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

METHODS = ("lorm", "fedavg-lora", "regmean-lora", "lorm-a", "lorm-b")
DATASETS = ("digits", "cifar100", "imagenet-r", "imagenet-a", "cub200", "cars196", "eurosat")


@dataclass
class Config:
    """Every knob of a run. The defaults are the embedded digits benchmark that
    ``lorm demo`` runs; the paper's settings live in configs/*.yaml."""

    # data
    dataset: str = "digits"
    data_root: str | None = None       # folder of a real dataset (docs/datasets.md)
    download: bool = False             # torchvision datasets only, needs internet
    num_tasks: int = 5
    last_task_classes: int | None = None  # e.g. Cars-196: 10 tasks, the last with 16
    num_clients: int = 5
    beta: float = 0.5                  # Dirichlet concentration of the label skew
    min_samples_per_client: int = 2    # per client per task; 0 lets clients sit tasks out
    participation: float = 1.0         # fraction of clients per round
    # model
    backbone: str = "tiny-vit"         # "tiny-vit" or a timm model name
    pretrained: str | None = None      # local .safetensors / .npz / .pth
    img_size: int | None = None        # default: 8 for digits, the backbone's own otherwise
    rank: int = 4
    targets: list[str] = field(default_factory=lambda: ["attn.qkv", "attn.proj", "mlp.fc1",
                                                        "mlp.fc2"])
    # training
    method: str = "lorm"
    rounds: int = 4
    local_epochs: int = 4
    batch_size: int = 8
    lr_a: float = 1e-2
    lr_b: float = 1e-2
    lr_head: float = 1e-2
    alpha_backbone: float = 0.0
    alpha_head: float = 0.5
    stats_passes: int = 1
    amp: bool = True                   # bf16 autocast, on CUDA only
    device: str = "auto"
    num_threads: int = 0               # CPU threads for torch; 0 keeps torch's default
    dist_timeout: float = 600.0        # seconds a rank waits for the others (torchrun runs)
    seed: int = 0
    eval_every_round: bool = False

    def validate(self) -> "Config":
        problems = []
        if self.method not in METHODS:
            problems.append(f"method must be one of {METHODS}, got {self.method!r}")
        if self.dataset not in DATASETS:
            problems.append(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        for name in ("num_tasks", "num_clients", "rounds", "local_epochs", "batch_size", "rank",
                     "stats_passes"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("alpha_backbone", "alpha_head"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.participation <= 1.0:
            problems.append(f"participation must be in (0, 1], got {self.participation}")
        if self.min_samples_per_client < 0:
            problems.append(f"min_samples_per_client must be >= 0, got {self.min_samples_per_client}")
        if self.beta <= 0:
            problems.append(f"beta must be > 0, got {self.beta}")
        if problems:
            raise ValueError("invalid config: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _updated(config: Config, changes: dict[str, Any], source: str) -> Config:
    known = {f.name: f for f in dataclasses.fields(Config)}
    unknown = sorted(set(changes) - set(known))
    if unknown:
        raise ValueError(f"{source}: unknown config keys {unknown}; known: {', '.join(sorted(known))}")
    coerced = {}
    for key, value in changes.items():
        current = getattr(config, key)
        if isinstance(current, float) and isinstance(value, (int, str)) and not isinstance(value, bool):
            try:  # YAML reads 1e-2 (no dot) as a string
                value = float(value)
            except ValueError:
                raise ValueError(f"{source}: {key} must be a number, got {value!r}") from None
        coerced[key] = value
    return dataclasses.replace(config, **coerced)


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """``["rank=8", "lr_a=1e-3"]`` (values in YAML syntax) -> a new, validated Config."""
    changes = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        changes[key.strip()] = yaml.safe_load(text)
    return _updated(config, changes, "--set").validate()


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Reads a YAML preset (or the defaults) and applies ``key=value`` overrides."""
    config = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist (presets: configs/*.yaml)")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config is a mapping of keys to values")
        config = _updated(config, data, str(path))
    return apply_overrides(config, overrides or [])
