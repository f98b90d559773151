"""Server side: sum client updates as they arrive, then solve once.

:class:`Aggregator` keeps one float64 running sum per statistic, so its memory does
not grow with the number of clients, and it validates an update completely before
adding any of it: a bad update is refused with a clear error and the sums of the
other clients survive. :meth:`Aggregator.result` solves every layer with
:func:`lorm_ext.spd_solve`, batched over layers whose statistics have the same shape.
The across-task sums live in :mod:`lorm.cross_task`.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import torch

import lorm_ext
from lorm_ext.reference import (ACCEPTED, DIAGONAL_GRAM, NEGATIVE_CURVATURE, NEGATIVE_DIAGONAL,
                                NOT_FINITE, NOT_SYMMETRIC, PLAIN, SQUARE_GRAM, WOULD_OVERFLOW)

from .messages import FACTORS, ClientUpdate, SolveStats

F64 = torch.float64
NEGATIVE_RTOL = 1e-5       # diagonal entries / curvature below -rtol * scale are not round-off
CURVATURE_PROBES = 8       # random directions v along which v.T q v must not be negative
FINITE_LIMIT = sys.float_info.max
BATCHED_SOLVE_MAX_NUMEL = 1 << 20  # q up to 1024 x 1024 is stacked with its peers
# lorm_ext.add_terms' verdicts as rejection messages
_VERDICTS = {NOT_FINITE: "{key} contains NaN or Inf",
             NOT_SYMMETRIC: "{key} is not symmetric",
             NEGATIVE_DIAGONAL: "{key} has a negative diagonal entry: not a Gram",
             WOULD_OVERFLOW: "{key}: adding values up to {magnitude:.3g} would overflow the float64 running sum",
             NEGATIVE_CURVATURE: "{key} has negative curvature along a random direction: not a Gram"}


def _kind(key: str, term: torch.Tensor) -> int:
    if not key.endswith("/q"):
        return PLAIN
    return SQUARE_GRAM if term.dim() == 2 else DIAGONAL_GRAM


def _layout(tensors: dict[str, torch.Tensor]) -> tuple:
    """What the structure checks look at in an update's tensors: an update of
    SolveStats with the layout of one that passed them passes them too."""
    return tuple((key, type(t), t.shape, t.dtype, t.device) for key, t in tensors.items())


def _all_solve_stats(update: ClientUpdate) -> bool:
    return (all(type(s) is SolveStats for s in update.layers.values())
            and (update.head is None or type(update.head) is SolveStats))


@dataclass
class _AddPlan:
    """What adding an update of one layout takes, kept while updates keep it: the
    terms' keys in order, their add_terms kinds, the running sums and probe matrices
    in that order, and per key an upper bound of max |sum| so far."""

    layout: tuple
    keys: list[str]
    kinds: list[int]
    sums: list[torch.Tensor]
    probes: list[torch.Tensor]
    bounds: list[float]


class UpdateRejected(ValueError):
    """A client update does not fit this aggregator; nothing was added."""


class MergeError(ValueError):
    """The summed statistics do not give a usable merge (indefinite or overflowing);
    the sums are kept as they were."""


def finite_results(results: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``results`` cast to ``dtype``; raises :class:`MergeError` naming any entry that is
    not finite after the cast (a solve never hands back Inf or NaN silently)."""
    out = {name: t.to(dtype) for name, t in results.items()}
    bad = [name for name, t in out.items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise MergeError(f"the merge of {', '.join(bad)} is not finite in "
                         f"{str(dtype).replace('torch.', '')}: the summed statistics are too "
                         "ill-conditioned or too large")
    return out


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
        self._bounds: dict[str, float] = {}  # max |sum| bounds per key while there is no plan
        self._probe_cache: dict[tuple, torch.Tensor] = {}
        self._plan: _AddPlan | None = None  # how the last accepted update was added
        self.num_clients = 0
        self.num_samples = 0

    # -- adding -----------------------------------------------------------------------
    def add(self, update: ClientUpdate) -> None:
        """Validates ``update`` completely, then adds it to the running sums.

        Raises :class:`UpdateRejected` (sums bit-identical to before) when any part of
        it is malformed, non-finite, not symmetric or not PSD where a Gram must be, or
        would make a running sum overflow."""
        terms, layout = self._validated_terms(update)
        fresh = not self._sums  # the first update adds into zeros, kept only if accepted
        sums = ({key: torch.zeros(t.shape, dtype=F64, device=t.device) for key, t in terms.items()}
                if fresh else self._sums)
        plan = (self._plan if self._plan is not None and self._plan.layout == layout
                else self._make_plan(layout, terms, sums))
        try:
            rows = lorm_ext.add_terms(
                plan.sums, list(terms.values()), plan.kinds,
                [FINITE_LIMIT - bound for bound in plan.bounds], NEGATIVE_RTOL, plan.probes,
                check=False)  # types and shapes were checked above; the kernel checks again
        except lorm_ext.LormInputError as exc:
            self._reject(str(exc))
        except RuntimeError as exc:  # the kernel's argument checks, which run before any add
            if not str(exc).startswith(("add_terms:", "inspect_terms:")):
                raise
            self._reject(str(exc))
        found = rows.tolist()
        for key, row in zip(plan.keys, found):
            if row[4] != ACCEPTED:
                self._reject(_VERDICTS[int(row[4])].format(key=key, magnitude=row[0]))
        if fresh:
            self._sums = sums
        plan.bounds = [bound + row[0] for bound, row in zip(plan.bounds, found)]
        if self._expected is None:
            self._expected = list(update.layers)
        self._plan = plan
        self.num_clients += 1
        self.num_samples += update.num_samples

    def _make_plan(self, layout: tuple, terms: dict[str, torch.Tensor],
                   sums: dict[str, torch.Tensor]) -> "_AddPlan":
        keys = list(terms)
        kinds = [_kind(key, terms[key]) for key in keys]
        bounds = dict(zip(self._plan.keys, self._plan.bounds)) if self._plan else self._bounds
        return _AddPlan(layout, keys, kinds, [sums[key] for key in keys],
                        [self._probes(terms[key]) for key, kind in zip(keys, kinds) if kind == SQUARE_GRAM],
                        [bounds.get(key, 0.0) for key in keys])

    def _terms(self, update: ClientUpdate) -> dict[str, torch.Tensor]:
        """What ``update`` adds, by key, detached. Tensors stay in their wire dtype:
        adding float32 into a float64 sum casts on the fly. The bias enters weighted by
        its sample count."""
        return self._detached_terms(update.tensors(), update.num_samples)

    @staticmethod
    def _detached_terms(tensors: dict[str, torch.Tensor], num_samples: int) -> dict[str, torch.Tensor]:
        terms = {key: t.detach() if t.requires_grad else t for key, t in tensors.items()}
        if "head/bias" in terms:
            terms["head/bias"] = terms["head/bias"].to(F64) * num_samples
        return terms

    def _reject(self, message: str):
        raise UpdateRejected(f"update rejected ({message}); the running sums are unchanged")

    def _validated_terms(self, update: ClientUpdate) -> tuple[dict[str, torch.Tensor], tuple]:
        """The terms ``update`` adds, after checking their structure and shapes (their
        values are checked by :func:`lorm_ext.add_terms` as they are added), and the
        layout of its tensors."""
        if not isinstance(update, ClientUpdate):
            self._reject(f"expected a ClientUpdate, got {type(update).__name__}")
        if not isinstance(update.layers, Mapping):
            self._reject(f"layers must map layer names to SolveStats, got "
                         f"{type(update.layers).__name__}")
        where = (update.task, update.round, update.factor)
        if where != (self.task, self.round, self.factor):
            self._reject(f"it is for task {update.task}, round {update.round}, factor "
                         f"{update.factor!r}; this aggregator takes task {self.task}, round "
                         f"{self.round}, factor {self.factor!r}")
        samples = update.num_samples
        if isinstance(samples, bool) or not isinstance(samples, int) or samples <= 0:
            self._reject(f"num_samples must be a positive int, got {samples!r}")
        if self._plan is not None and _all_solve_stats(update):
            try:  # the common case: laid out exactly as the last update that passed
                tensors = update.tensors()
                layout = _layout(tensors)
                if layout == self._plan.layout:
                    return self._detached_terms(tensors, samples), layout
            except (AttributeError, TypeError):
                pass  # malformed: the checks below say how
        self._check_layout(update)
        tensors = update.tensors()
        terms = self._detached_terms(tensors, samples)
        for key, value in terms.items():
            if self._sums and key not in self._sums:
                self._reject(f"{key} is not among the running sums")
            if key in self._sums and self._sums[key].shape != value.shape:
                self._reject(f"{key} has shape {tuple(value.shape)}, the sum so far has "
                             f"{tuple(self._sums[key].shape)}")
        return terms, _layout(tensors)

    def _check_layout(self, update: ClientUpdate) -> None:
        """Layer names, types, dtypes and shapes of ``update``'s statistics against each
        other and against the layers so far."""
        if self._expected is not None and set(update.layers) != set(self._expected):
            missing = sorted(set(self._expected) - set(update.layers))
            extra = sorted(set(update.layers) - set(self._expected))
            self._reject(f"layers differ: missing {missing}, unexpected {extra}")
        if self.num_clients and (update.head is None) != ("head/q" not in self._sums):
            self._reject("head statistics present in some updates and not in others")
        for name, stats in update.layers.items():
            self._check_structure(f"layer/{name}", stats, gram_only=self.factor == "G")
        if update.head is not None:
            if self.factor == "G":
                self._reject("an end-of-task ('G') update carries no head statistics")
            self._check_structure("head", update.head, gram_only=False)
        if (update.head is None) != (update.head_bias is None):
            self._reject("head statistics and head bias must come together")
        if update.head_bias is not None:
            self._check_tensor("head/bias", update.head_bias, (update.head.p.shape[0],))

    def _probes(self, q: torch.Tensor) -> torch.Tensor:
        """This aggregator's random directions for (d, d) Grams: drawn once per d from OS
        entropy, so no client can know them, and reused for every update it checks."""
        key = (q.shape[0], q.device, CURVATURE_PROBES)
        if key not in self._probe_cache:
            gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))
            self._probe_cache[key] = torch.randn(CURVATURE_PROBES, q.shape[0], generator=gen).to(q.device)
        return self._probe_cache[key]

    def _check_tensor(self, what: str, t, shape: tuple | None = None) -> None:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            self._reject(f"{what} must be a floating-point tensor")
        if t.device.type == "meta":
            self._reject(f"{what} is a meta tensor (no values)")
        if shape is not None and tuple(t.shape) != tuple(shape):
            self._reject(f"{what} has shape {tuple(t.shape)}, expected {tuple(shape)}")

    def _check_structure(self, key: str, stats: SolveStats, gram_only: bool) -> None:
        """Types and shapes of one layer's (or the head's) statistics; their values are
        checked by :func:`lorm_ext.add_terms`."""
        if not isinstance(stats, SolveStats):
            self._reject(f"{key}: expected SolveStats, got {type(stats).__name__}")
        q = stats.q
        self._check_tensor(f"{key}/q", q)
        if q.dim() not in (1, 2):
            self._reject(f"{key}/q must be (d, d) or (d,), got {tuple(q.shape)}")
        if q.dim() == 2 and q.shape[0] != q.shape[1]:
            self._reject(f"{key}/q must be square, got {tuple(q.shape)}")
        if gram_only:
            if stats.p is not None:
                self._reject(f"{key} carries p, but an end-of-task ('G') update sends only q")
            return
        if stats.p is None:
            self._reject(f"{key}/p is missing (factor {self.factor!r} needs it)")
        self._check_tensor(f"{key}/p", stats.p)
        if stats.p.dim() != 2 or stats.p.shape[1] != q.shape[0]:
            self._reject(f"{key}/p must be (m, {q.shape[0]}) to match q, "
                         f"got {tuple(stats.p.shape)}")

    # -- combining partial aggregators (distributed runs) ---------------------------------
    def partial_sums(self) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The running sums by key and the layer names (empty before the first update)."""
        return dict(self._sums), list(self._expected or [])

    def replace_sums(self, sums: dict[str, torch.Tensor], layers: list[str], num_clients: int,
                     num_samples: int) -> None:
        """Installs sums combined elsewhere (e.g. all-reduced over ranks)."""
        self._sums, self._expected = dict(sums), list(layers)
        self._plan = None
        keys = list(self._sums)  # the same one-read magnitudes that add() keeps up to date
        found = lorm_ext.inspect_terms([self._sums[key] for key in keys])
        self._bounds = {key: row[0] for key, row in zip(keys, found)}
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

    def result(self, mixed_precision: bool = True) -> MergeResult:
        """Solves every layer (and the head) from the sums; the sums stay as they are.
        ``mixed_precision``: see :func:`lorm_ext.spd_solve`."""
        self._require_clients()
        if self.factor == "G":
            raise ValueError("a Gram-only ('G') aggregator has nothing to solve: use sums()")
        problems = self.sums()
        solved = solve_batched({name: (s.p, s.q) for name, s in problems.items()}, mixed_precision)
        head_b = self._sums.get("head/bias")
        if head_b is not None:
            solved["head bias"] = head_b / self.num_samples
        merged = finite_results(solved, self.dtype)
        return MergeResult(layers=merged, head_weight=merged.pop("head", None),
                           head_bias=merged.pop("head bias", None),
                           num_clients=self.num_clients, num_samples=self.num_samples)

    def _require_clients(self) -> None:
        if self.num_clients == 0:
            raise ValueError("no client update has been added yet")


def solve_batched(problems: dict[str, tuple[torch.Tensor, torch.Tensor]],
                  mixed_precision: bool = True) -> dict[str, torch.Tensor]:
    """``p @ pinv(q)`` for every named ``(p, q)``. Small problems of equal shapes share one
    :func:`lorm_ext.spd_solve` call (48 ViT-B B-step layers form 4 groups); large ones
    are solved one at a time, which costs the same and never stacks copies of big Grams.
    ``mixed_precision`` goes to :func:`lorm_ext.spd_solve`."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for name, (p, q) in problems.items():
        small = q.numel() <= BATCHED_SOLVE_MAX_NUMEL
        groups[(tuple(p.shape), tuple(q.shape)) if small else (name,)].append(name)
    out = {}
    for names in groups.values():
        p, q = (torch.stack([problems[n][i] for n in names]) if len(names) > 1
                else problems[names[0]][i].unsqueeze(0) for i in (0, 1))
        try:
            solved = lorm_ext.spd_solve(q, p, mixed_precision=mixed_precision)
        except ValueError as exc:
            raise MergeError(f"solving {', '.join(names)}: {exc}") from None
        for name, x in zip(names, solved):
            out[name] = x
    return out
