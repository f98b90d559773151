"""Fake (meta) kernels: shapes and dtypes of every op for torch.compile and FakeTensor."""

import torch


@torch.library.register_fake("lorm_ext::gram_update")
def _gram_update_fake(acc, x):
    torch._check(acc.shape[-1] == x.shape[-1], lambda: "acc and x disagree on d")


@torch.library.register_fake("lorm_ext::lowrank_gram_update")
def _lowrank_gram_update_fake(acc, x, a, diag_acc):
    torch._check(a.shape[-1] == x.shape[-1], lambda: "a and x disagree on d")


@torch.library.register_fake("lorm_ext::spd_solve")
def _spd_solve_fake(q, p, mixed_min_dim=1024):
    return p.new_empty(p.shape, dtype=torch.promote_types(q.dtype, p.dtype))


@torch.library.register_fake("lorm_ext::add_terms")
def _add_terms_fake(sums, ts, kinds, limits, negative_rtol, probes):
    return torch.empty((len(ts), 5), dtype=torch.float64, device="cpu")


@torch.library.register_fake("lorm_ext::inspect_terms")
def _inspect_terms_fake(ts, symmetric):
    return ts[0].new_empty((len(ts), 4), dtype=torch.float64)
