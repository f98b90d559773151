"""The Client role: one client's round (local training of the factor(s) the method
names, then the statistics pass that makes its ClientUpdate), its task-end Grams and
its evaluation counts."""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import merge
from ..backbones import Backbone
from ..lora import LoRALinear, head_of, serving, train_factor
from ..messages import ClientUpdate, SolveStats
from ..precision import autocast
from ..stats import StatsCollector
from .config import STATS_PADDINGS
from .federation import Federation
from .progress import Clock
from .randomness import EVAL, STATS, TASK_END, TRAIN, drawn_from, make_loader

EVAL_BATCH = 256  # test batch: shares of whole batches (torchrun, Flower) give the same bits


def train_locally(model: nn.Module, layers: dict[str, LoRALinear], head: nn.Linear, factor: str,
                  loader: DataLoader, task_classes: torch.Tensor, epochs: int,
                  lrs: dict[str, float], device: torch.device, amp: torch.dtype | None,
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
                       amp: torch.dtype | None, backbone: Backbone,
                       padding: str = "exclude") -> StatsCollector:
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


class Client:
    """One federation member: local training of the method's factor(s), the statistics
    pass and the task-end pass that make its :class:`ClientUpdate`, and evaluation
    counts. It holds no server state: each step starts from the deployed state it is
    given (:meth:`load`, :meth:`serve`). What the in-process transport, a torchrun rank
    and a Flower node each run.

    Args:
        federation: the config made concrete (data, backbone, method, device).
        model: the LoRA model to train in; default: a copy of ``federation.model``.
        clock: where the train / stats / eval seconds go.
        quiet: no progress bars.
    """

    def __init__(self, federation: Federation, model: nn.Module | None = None,
                 clock: Clock | None = None, quiet: bool = True):
        self.federation, self.config, self.device = federation, federation.config, federation.device
        self.bench, self.backbone, self.method = federation.bench, federation.backbone, federation.method
        self.model = copy.deepcopy(federation.model) if model is None else model
        self.layers = {n: self.model.get_submodule(n) for n in federation.layers}
        self.head = head_of(self.model)
        self.history: dict[str, torch.Tensor] = {}  # the earlier tasks' residuals, summed
        self.clock, self.quiet = clock or Clock(), quiet

    # -- the state a step starts from --------------------------------------------------
    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Installs the server's deployed state (``Server.deployed_tensors``): head, every
        layer's ``A``, ``B`` and ``delta`` with LoRA on, and ``history/`` residuals."""
        for name, layer in self.layers.items():
            layer.set_factors(a=state[f"{name}.A"], b=state[f"{name}.B"])
            layer.set_delta(state.get(f"{name}.delta"))
            layer.lora_enabled = True
        self._load_head(state)
        self.history = {k[len("history/"):]: v for k, v in state.items()
                        if k.startswith("history/")}

    def serve(self, state: dict[str, torch.Tensor]) -> None:
        """Installs the deployed model to evaluate: the head and each layer's ``delta``
        (``W0`` where a layer has none), LoRA off."""
        self._load_head(state)
        for name, layer in self.layers.items():
            layer.deploy(state.get(f"{name}.delta"))

    def _load_head(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.head.weight.copy_(state["head.weight"])
            self.head.bias.copy_(state["head.bias"])

    # -- steps --------------------------------------------------------------------------
    def round_update(self, task: int, rnd: int, client: int) -> ClientUpdate:
        """Client ``client``'s round ``rnd`` of ``task`` from the loaded state: local
        training, then the statistics pass the method asks for."""
        cfg = self.config
        indices = self.bench.client_indices[task][client]
        loader = make_loader(self.bench.train, indices, cfg.batch_size, [cfg.seed, task, rnd, client])
        classes = torch.tensor(self.bench.task_classes[task], device=self.device)
        lrs = {"A": cfg.lr_a, "B": cfg.lr_b, "head": cfg.lr_head}
        with drawn_from([cfg.seed, task, rnd, client, TRAIN], self.device):
            self.clock.timed("train", train_locally, self.model, self.layers, self.head,
                             self.method.trains(rnd), loader, classes, cfg.local_epochs, lrs,
                             self.device, self.federation.amp, self.backbone,
                             progress=not self.quiet)
        mode = self.method.stats_mode(rnd)
        stats = None
        if mode is not None:
            loader = self.statistics_loader(indices, [cfg.seed, task, rnd, client, 1])
            current = {n: l.served_residual() for n, l in self.layers.items()}
            with self.statistics_model(task, current), \
                    drawn_from([cfg.seed, task, rnd, client, STATS], self.device):
                stats = self.clock.timed("stats", collect_statistics, self.model, self.layers,
                                         self.head, mode, loader, cfg.stats_passes, self.device,
                                         self.federation.amp, self.backbone, cfg.stats_padding)
        return self.method.client_message(task, rnd, self.layers, self.head, stats, len(indices))

    def task_end_update(self, task: int, client: int) -> ClientUpdate:
        """The task end's Grams of client ``client`` through the model serving the task's
        residuals (the method's, from the loaded factors), regularised: a ``"G"`` update."""
        cfg = self.config
        residuals = self.method.task_residuals(self.layers)
        mode = "diag" if cfg.alpha_backbone == 0 else "full"
        indices = self.bench.client_indices[task][client]
        loader = self.statistics_loader(indices, [cfg.seed, task, cfg.rounds, client, 2])
        with serving(self.layers, residuals), self.statistics_model(task, residuals), \
                drawn_from([cfg.seed, task, cfg.rounds, client, TASK_END], self.device):
            stats = self.clock.timed("stats", collect_statistics, self.model, self.layers, None,
                                     mode, loader, cfg.stats_passes, self.device, self.federation.amp,
                                     self.backbone, cfg.stats_padding)
        return ClientUpdate(task, cfg.rounds, "G", len(indices), layers={
            name: SolveStats(p=None, q=merge.regularize_gram(g, cfg.alpha_backbone))
            for name, g in stats.grams.items()})

    def statistics_loader(self, indices: list[int], seed: list[int]) -> DataLoader:
        """The statistics passes' loader: Grams are sums, so with ``stats_padding:
        exclude`` the order is free and inputs of about one size are batched together
        (``Backbone.by_length``: less padding to compute); otherwise shuffled by ``seed``."""
        cfg = self.config
        free = cfg.stats_padding == "exclude" and cfg.pass_order == "by-length"
        ordered = self.backbone.by_length(self.bench.train, indices) if free else None
        if ordered is None:
            return make_loader(self.bench.train, indices, cfg.batch_size, seed)
        return make_loader(self.bench.train, ordered, cfg.batch_size, seed, shuffle=False)

    def statistics_model(self, task: int, current: dict[str, torch.Tensor]):
        """A context in which the layers serve what the statistics passes must see
        (``stats_model``, docs/fidelity.md): ``running-mean`` from task 1 on serves
        ``W0 + (sum of earlier tasks' residuals + current) / (task + 1)``; otherwise the
        model stays as it is."""
        if self.config.stats_model == "current" or task == 0:
            return contextlib.nullcontext()
        return serving(self.layers, merge.running_mean(self.history, current, task))

    def count_correct(self, indices: list[int], test_task: int, seen_task: int) -> tuple[int, int]:
        """``(correct, total)`` of the installed model over the test samples ``indices``
        (of ``test_task``), argmax over the classes of tasks <= ``seen_task``."""
        return count_correct(self.model, self.federation, indices, test_task, seen_task)


@torch.no_grad()
def count_correct(model: nn.Module, federation: Federation, indices: list[int], test_task: int,
                  seen_task: int) -> tuple[int, int]:
    """``(correct, total)`` of ``model`` over the test samples ``indices`` (of
    ``test_task``), argmax over the classes of tasks <= ``seen_task``; counts of disjoint
    shares of whole :data:`EVAL_BATCH` batches add up to the whole's bits."""
    bench, device = federation.bench, federation.device
    seen = torch.tensor(sum(bench.task_classes[:seen_task + 1], []), device=device)
    loader = make_loader(bench.test, indices, EVAL_BATCH, [0], shuffle=False)
    model.eval()
    correct = total = 0
    with drawn_from([federation.config.seed, test_task, seen_task, EVAL], device):
        for x, y in loader:
            with autocast(device, federation.amp):
                logits = model(federation.backbone.to_device(x, device))[:, seen]
            correct += (seen[logits.argmax(1)] == y.to(device)).sum().item()
            total += len(y)
    return correct, total
