"""The server's across-task sums (lorm-math.md): :class:`CrossTaskMerger`."""

from __future__ import annotations

import torch

from .aggregate import F64, finite_results, solve_batched


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

    def merged(self, dtype: torch.dtype = torch.float32,
               mixed_precision: bool = True) -> dict[str, torch.Tensor]:
        """``dW_merged`` ``(o, d)`` per layer. ``mixed_precision``: see
        :func:`lorm_ext.spd_solve`."""
        if not self.num_tasks:
            raise ValueError("no task has been added yet")
        problems = {n: (self._sw[n], self._sg[n]) for n in self._sw}
        return finite_results(solve_batched(problems, mixed_precision), dtype)
