"""Server side: sum client updates as they arrive, then solve once.

:class:`Aggregator` keeps one float64 running sum per statistic, so its memory does
not grow with the number of clients, and it validates an update completely before
adding any of it: a bad update is refused with a clear error and the sums of the
other clients survive. :meth:`Aggregator.result` solves every layer with
:func:`lorm_ext.spd_solve`, batched over layers whose statistics have the same shape.
:class:`CrossTaskMerger` keeps the across-task sums ``S_W`` and ``S_G``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

import lorm_ext

from .messages import FACTORS, ClientUpdate, SolveStats

F64 = torch.float64
SYMMETRY_RTOL = 1e-5
BATCHED_SOLVE_MAX_NUMEL = 1 << 20  # q up to 1024 x 1024 is stacked with its peers


class UpdateRejected(ValueError):
    """A client update does not fit this aggregator; nothing was added."""


@dataclass
class MergeResult:
    """The merged model pieces of one round.

    Attributes:
        layers: name -> merged matrix (A-step: ``A*`` ``(r, d)``; B-step: ``B*`` ``(o, r)``).
        head_weight: ``(C, d)`` RegMean of the heads, or None.
        head_bias: ``(C,)`` sample-weighted mean of the biases, or None.
        num_clients, num_samples: what went into the sums.
    """

    layers: dict[str, torch.Tensor]
    head_weight: torch.Tensor | None
    head_bias: torch.Tensor | None
    num_clients: int
    num_samples: int


class Aggregator:
    """Streaming sum of :class:`ClientUpdate` s for one (task, round, factor).

    Args:
        task, round, factor: what every update must belong to.
        layers: expected layer names; by default the first update fixes them.
        dtype: dtype of the merged tensors :meth:`result` returns.
    """

    def __init__(self, task: int, round: int, factor: str, layers: list[str] | None = None,
                 dtype: torch.dtype = torch.float32):
        if factor not in FACTORS:
            raise ValueError(f"factor must be one of {FACTORS}, got {factor!r}")
        self.task, self.round, self.factor, self.dtype = task, round, factor, dtype
        self._expected = None if layers is None else list(layers)
        self._sums: dict[str, torch.Tensor] = {}
        self.num_clients = 0
        self.num_samples = 0

    # -- adding -----------------------------------------------------------------------
    def add(self, update: ClientUpdate) -> None:
        """Validates ``update`` completely, then adds it to the running sums."""
        terms = self._validated_terms(update)
        for key, value in terms.items():
            if key in self._sums:
                self._sums[key].add_(value)
            else:
                self._sums[key] = value.to(F64, copy=True)
        if self._expected is None:
            self._expected = list(update.layers)
        self.num_clients += 1
        self.num_samples += update.num_samples

    def _terms(self, update: ClientUpdate) -> dict[str, torch.Tensor]:
        """What ``update`` adds, by key. Tensors stay in their wire dtype: adding float32
        into a float64 sum casts on the fly. The bias enters weighted by its sample count."""
        terms = update.tensors()
        if "head/bias" in terms:
            terms["head/bias"] = terms["head/bias"].to(F64) * update.num_samples
        return terms

    def _reject(self, message: str):
        raise UpdateRejected(f"update rejected ({message}); the running sums are unchanged")

    def _validated_terms(self, update: ClientUpdate) -> dict[str, torch.Tensor]:
        """The float64 terms ``update`` adds, after checking every one of them."""
        if not isinstance(update, ClientUpdate):
            self._reject(f"expected a ClientUpdate, got {type(update).__name__}")
        where = (update.task, update.round, update.factor)
        if where != (self.task, self.round, self.factor):
            self._reject(f"it is for task {update.task}, round {update.round}, factor "
                         f"{update.factor!r}; this aggregator takes task {self.task}, round "
                         f"{self.round}, factor {self.factor!r}")
        if not isinstance(update.num_samples, int) or update.num_samples <= 0:
            self._reject(f"num_samples must be a positive int, got {update.num_samples!r}")
        if self._expected is not None and set(update.layers) != set(self._expected):
            missing = sorted(set(self._expected) - set(update.layers))
            extra = sorted(set(update.layers) - set(self._expected))
            self._reject(f"layers differ: missing {missing}, unexpected {extra}")
        if self.num_clients and (update.head is None) != ("head/q" not in self._sums):
            self._reject("head statistics present in some updates and not in others")
        for name, stats in update.layers.items():
            self._validate_stats(f"layer {name!r}", stats, needs_p=self.factor != "G")
        if update.head is not None:
            self._validate_stats("head", update.head, needs_p=True)
        if (update.head is None) != (update.head_bias is None):
            self._reject("head statistics and head bias must come together")
        if update.head_bias is not None:
            self._check_tensor("head bias", update.head_bias, (update.head.p.shape[0],))
        terms = self._terms(update)
        for key, value in terms.items():
            if key in self._sums and self._sums[key].shape != value.shape:
                self._reject(f"{key} has shape {tuple(value.shape)}, the sum so far has "
                             f"{tuple(self._sums[key].shape)}")
        return terms

    def _check_tensor(self, what: str, t, shape: tuple | None = None) -> None:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            self._reject(f"{what} must be a floating-point tensor")
        if shape is not None and tuple(t.shape) != tuple(shape):
            self._reject(f"{what} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        if not bool(torch.isfinite(t).all()):
            self._reject(f"{what} contains NaN or Inf")

    def _validate_stats(self, what: str, stats: SolveStats, needs_p: bool) -> None:
        if not isinstance(stats, SolveStats):
            self._reject(f"{what}: expected SolveStats, got {type(stats).__name__}")
        q = stats.q
        self._check_tensor(f"{what} q", q)
        if q.dim() == 2:
            if q.shape[0] != q.shape[1]:
                self._reject(f"{what} q must be square, got {tuple(q.shape)}")
            diagonal = torch.diagonal(q).to(F64)
            if not _is_symmetric(q, diagonal.abs().max().item()):
                self._reject(f"{what} q is not symmetric")
        elif q.dim() == 1:
            diagonal = q.to(F64)
        else:
            self._reject(f"{what} q must be (d, d) or (d,), got {tuple(q.shape)}")
        if (diagonal < -SYMMETRY_RTOL * diagonal.abs().max()).any():
            self._reject(f"{what} q has a negative diagonal entry: not a Gram")
        if not needs_p:
            return
        if stats.p is None:
            self._reject(f"{what} p is missing (factor {self.factor!r} needs it)")
        self._check_tensor(f"{what} p", stats.p)
        if stats.p.dim() != 2 or stats.p.shape[1] != q.shape[0]:
            self._reject(f"{what} p must be (m, {q.shape[0]}) to match q, "
                         f"got {tuple(stats.p.shape)}")

    # -- combining partial aggregators (distributed runs) ---------------------------------
    def partial_sums(self) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The running sums by key and the layer names (empty before the first update)."""
        return dict(self._sums), list(self._expected or [])

    def replace_sums(self, sums: dict[str, torch.Tensor], layers: list[str], num_clients: int,
                     num_samples: int) -> None:
        """Installs sums combined elsewhere (e.g. all-reduced over ranks)."""
        self._sums, self._expected = dict(sums), list(layers)
        self.num_clients, self.num_samples = num_clients, num_samples

    # -- results ------------------------------------------------------------------------
    def sums(self) -> dict[str, SolveStats]:
        """The running sums per layer (``"head"`` included), float64."""
        self._require_clients()
        out = {}
        for name in self._expected:
            out[name] = SolveStats(p=self._sums.get(f"layer/{name}/p"),
                                   q=self._sums[f"layer/{name}/q"])
        if "head/q" in self._sums:
            out["head"] = SolveStats(p=self._sums["head/p"], q=self._sums["head/q"])
        return out

    def result(self) -> MergeResult:
        """Solves every layer (and the head) from the sums; the sums stay as they are."""
        self._require_clients()
        if self.factor == "G":
            raise ValueError("a Gram-only ('G') aggregator has nothing to solve: use sums()")
        problems = self.sums()
        solved = solve_batched({name: (s.p, s.q) for name, s in problems.items()})
        head_w = solved.pop("head", None)
        head_b = self._sums.get("head/bias")
        return MergeResult(
            layers={n: t.to(self.dtype) for n, t in solved.items()},
            head_weight=None if head_w is None else head_w.to(self.dtype),
            head_bias=None if head_b is None else (head_b / self.num_samples).to(self.dtype),
            num_clients=self.num_clients, num_samples=self.num_samples)

    def _require_clients(self) -> None:
        if self.num_clients == 0:
            raise ValueError("no client update has been added yet")


def _is_symmetric(q: torch.Tensor, max_diagonal: float) -> bool:
    """Randomised test: ``(q - q.T) v`` for a random ``v`` is 0 only for symmetric ``q``
    (almost surely). Two matrix-vector products; no ``(d, d)`` temporary."""
    gen = torch.Generator(device=q.device).manual_seed(q.shape[0])
    v = torch.randn(q.shape[0], 1, dtype=q.dtype, device=q.device, generator=gen)
    difference = (q @ v - q.T @ v).norm().item()
    # For a PSD q every |q_jk| <= max diag, so |q v| <= sqrt(d) * max diag * |v|.
    scale = max_diagonal * (q.shape[0] ** 0.5) * v.norm().item()
    return difference <= SYMMETRY_RTOL * max(scale, 1e-300)


def solve_batched(
        problems: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``p @ pinv(q)`` for every named ``(p, q)``. Small problems of equal shapes share one
    :func:`lorm_ext.spd_solve` call (48 ViT-B B-step layers form 4 groups); large ones
    are solved one at a time, which costs the same and never stacks copies of big Grams."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for name, (p, q) in problems.items():
        small = q.numel() <= BATCHED_SOLVE_MAX_NUMEL
        groups[(tuple(p.shape), tuple(q.shape)) if small else (name,)].append(name)
    out = {}
    for names in groups.values():
        p, q = (torch.stack([problems[n][i] for n in names]) if len(names) > 1
                else problems[names[0]][i].unsqueeze(0) for i in (0, 1))
        for name, x in zip(names, lorm_ext.spd_solve(q, p)):
            out[name] = x
    return out


class CrossTaskMerger:
    """Across-task sums of lorm-math.md: ``S_W += dW_t Gh_t``, ``S_G += Gh_t`` per
    layer, merged residual ``dW = S_W S_G^+``. Only the server holds these."""

    def __init__(self):
        self._sw: dict[str, torch.Tensor] = {}
        self._sg: dict[str, torch.Tensor] = {}
        self.num_tasks = 0

    def add_task(self, deltas: dict[str, torch.Tensor], grams: dict[str, torch.Tensor]) -> None:
        """Adds task t: residuals ``dW_t = B_t A_t`` ``(o, d)`` and the summed regularised
        Grams ``Gh_t`` (``(d, d)`` or ``(d,)``) of the same layers."""
        if set(deltas) != set(grams):
            raise ValueError(f"deltas and grams name different layers: "
                             f"{sorted(set(deltas) ^ set(grams))}")
        if self._sw and set(deltas) != set(self._sw):
            raise ValueError("the layers differ from the earlier tasks'")
        terms = {}
        for name, dw in deltas.items():
            g = grams[name].to(F64)
            if dw.dim() != 2 or dw.shape[1] != g.shape[0] or not torch.isfinite(dw).all():
                raise ValueError(f"layer {name!r}: residual {tuple(dw.shape)} does not fit "
                                 f"Gram {tuple(g.shape)} or is not finite")
            if name in self._sg and self._sg[name].shape != g.shape:
                raise ValueError(f"layer {name!r}: Gram shape changed between tasks")
            weighted = dw.to(F64) @ g if g.dim() == 2 else dw.to(F64) * g
            terms[name] = (weighted, g)
        for name, (weighted, g) in terms.items():
            self._sw[name] = weighted if name not in self._sw else self._sw[name] + weighted
            self._sg[name] = g.clone() if name not in self._sg else self._sg[name] + g
        self.num_tasks += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The sums as flat tensors (for checkpoints)."""
        return {**{f"sw/{n}": t for n, t in self._sw.items()},
                **{f"sg/{n}": t for n, t in self._sg.items()}}

    def load_state_dict(self, state: dict[str, torch.Tensor], num_tasks: int) -> None:
        self._sw = {k[3:]: v.to(F64) for k, v in state.items() if k.startswith("sw/")}
        self._sg = {k[3:]: v.to(F64) for k, v in state.items() if k.startswith("sg/")}
        self.num_tasks = num_tasks

    def merged(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """``dW_merged`` ``(o, d)`` per layer."""
        if not self.num_tasks:
            raise ValueError("no task has been added yet")
        solved = solve_batched({n: (self._sw[n], self._sg[n]) for n in self._sw})
        return {n: t.to(dtype) for n, t in solved.items()}
