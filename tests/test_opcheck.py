"""torch.library.opcheck on every op: schema, fake kernels, dispatch consistency."""

import pytest
import torch

import lorm_ext
from conftest import devices

pytestmark = pytest.mark.skipif(lorm_ext.backend() == "reference",
                                reason="the extension is not built")


def samples(device):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, generator=gen).to(device)
    a = torch.randn(3, 8, generator=gen).to(device)
    g = torch.randn(12, 8, dtype=torch.float64, generator=gen)
    q = (g.T @ g).to(device)
    return [
        (torch.ops.lorm_ext.gram_update.default, (torch.zeros(8, 8, device=device), x)),
        (torch.ops.lorm_ext.gram_update.default,
         (torch.zeros(8, dtype=torch.float64, device=device), x.bfloat16())),
        (torch.ops.lorm_ext.lowrank_gram_update.default,
         (torch.zeros(3, 3, device=device), x, a, torch.zeros(8, device=device))),
        (torch.ops.lorm_ext.lowrank_gram_update.default,
         (torch.zeros(3, 3, device=device), x.half(), a, None)),
        (torch.ops.lorm_ext.spd_solve.default, (q, torch.randn(4, 8, dtype=torch.float64,
                                                               generator=gen).to(device))),
        (torch.ops.lorm_ext.spd_solve.default,
         (q.diagonal().clone(), torch.randn(2, 8, generator=gen).to(device))),
        (torch.ops.lorm_ext.spd_solve.default,
         (q.expand(2, 8, 8).clone(), torch.randn(2, 3, 8, dtype=torch.float64, generator=gen).to(device),
          2)),
        (torch.ops.lorm_ext.inspect_terms.default, ([q.float(), x.float()], [1, 0])),
        (torch.ops.lorm_ext.inspect_terms.default, ([x.half()], [0])),
        (torch.ops.lorm_ext.add_terms.default,
         ([torch.zeros(8, 8, dtype=torch.float64, device=device), torch.zeros(4, 8, device=device)],
          [q.float(), x.float()], [2, 0], [1e300, 1e300], 1e-5,
          [torch.randn(8, 8, generator=gen).to(device)])),
    ]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("index", range(8))
def test_opcheck(device, index):
    op, args = samples(device)[index]
    torch.library.opcheck(op, args)


def test_spd_solve_fake_kernel_shape():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        q = torch.empty(3, 8, 8, dtype=torch.float64)
        p = torch.empty(3, 2, 8, dtype=torch.float32)
        out = torch.ops.lorm_ext.spd_solve(q, p)
    assert out.shape == (3, 2, 8) and out.dtype == torch.float64
