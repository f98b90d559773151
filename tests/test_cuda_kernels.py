"""The CUDA kernels' own paths against the reference: vectorised and scalar loads,
the fused low-rank kernel (shared and global diagonal), its r > 32 fallback, the
half-precision GemmEx Gram and the batched / single cuSOLVER factorizations.
Skipped without a GPU; the CPU suite covers the same semantics through the CPU twins."""

import pytest
import torch

import lorm_ext
from helpers import make_rows, rows64

pytestmark = pytest.mark.cuda

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# contiguous with d % 8 == 0 vectorises; strided or odd d takes the scalar path.
SHAPES = [((4, 197), 768, "contiguous"), ((3, 50), 771, "contiguous"),
          ((2, 33), 256, "strided"), ((5, 7), 64, "transposed"), ((1000,), 12288, "contiguous")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead,d,layout", SHAPES)
def test_diagonal(dtype, lead, d, layout):
    x = make_rows(lead, d, dtype, layout, seed=d, device="cuda")
    acc = torch.zeros(d, device="cuda")
    lorm_ext.gram_update(acc, x)
    rows = rows64(x)
    torch.testing.assert_close(acc.double().cpu(), (rows * rows).sum(0), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead,d,layout", SHAPES[:4])
def test_full(dtype, lead, d, layout):
    x = make_rows(lead, d, dtype, layout, seed=d, device="cuda")
    acc = torch.zeros(d, d, device="cuda")
    lorm_ext.gram_update(acc, x)
    rows = rows64(x)
    torch.testing.assert_close(acc.double().cpu(), rows.T @ rows, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("r", [1, 5, 8, 32, 33])
@pytest.mark.parametrize("lead,d,layout", SHAPES)
def test_lowrank(dtype, r, lead, d, layout):
    x = make_rows(lead, d, dtype, layout, seed=d + r, device="cuda")
    gen = torch.Generator().manual_seed(r)
    a = (torch.randn(r, d, generator=gen) / d**0.5).cuda()
    acc, diag = torch.zeros(r, r, device="cuda"), torch.zeros(d, device="cuda")
    lorm_ext.lowrank_gram_update(acc, x, a, diag)
    rows = rows64(x)
    z = rows @ a.double().cpu().T
    torch.testing.assert_close(acc.double().cpu(), z.T @ z, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(diag.double().cpu(), (rows * rows).sum(0), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("batch,d", [((), 16), ((48,), 64), ((12,), 768), ((3,), 200)])
def test_spd_solve_batched_and_single(batch, d):
    gen = torch.Generator().manual_seed(d)
    x = torch.randn(*batch, 2 * d, d, dtype=torch.float64, generator=gen)
    q = x.mT @ x
    p = torch.randn(*batch, 8, d, dtype=torch.float64, generator=gen)
    out = lorm_ext.spd_solve(q.cuda(), p.cuda()).cpu()
    ref = p @ torch.linalg.pinv(q, hermitian=True)
    assert ((out - ref).norm() / ref.norm()).item() < 1e-9


def test_spd_solve_singular_falls_back_on_gpu():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 32, dtype=torch.float64, generator=gen)
    q = torch.stack([x.T @ x, x.T @ x + torch.eye(32, dtype=torch.float64)])
    p = torch.randn(2, 3, 32, dtype=torch.float64, generator=gen)
    out = lorm_ext.spd_solve(q.cuda(), p.cuda()).cpu()
    ref = p @ torch.linalg.pinv(q, hermitian=True)
    assert (out - ref).abs().max().item() < 1e-8 * ref.abs().max().item()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,symmetric", [((1000, 1000), True), ((33, 33), True),
                                             ((4, 197, 768), False), ((7,), False)])
def test_inspect_terms(dtype, shape, symmetric):
    t = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    if symmetric:
        t = (t + t.mT) / 2
    t = t.to(dtype)
    ref = lorm_ext.reference.inspect_terms([t], [int(symmetric)])[0].tolist()
    ours = lorm_ext.inspect_terms([t.cuda()], [symmetric])[0]
    assert ours == (ref[0], True, True, ref[3])
    if symmetric:
        t[0, -1] += 1
        assert lorm_ext.inspect_terms([t.cuda()], [symmetric])[0][2] is False
    t.reshape(-1)[-1] = float("nan")
    assert lorm_ext.inspect_terms([t.cuda()], [symmetric])[0][1] is False
