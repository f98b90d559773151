// CPU Cholesky for spd_solve: LAPACK through ATen.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../solve.h"

namespace lorm {
namespace {

at::Tensor factor_cpu(const at::Tensor& q) {
  auto [lower, info] = at::linalg_cholesky_ex(q);
  q.copy_(lower);
  return info;
}

void solve_cpu(const at::Tensor& factor, const at::Tensor& p) {
  // X q = p  <=>  q X^T = p^T.
  p.copy_(at::cholesky_solve(p.mT(), factor, /*upper=*/false).mT());
}

at::Tensor spd_solve_cpu(const at::Tensor& q, const at::Tensor& p) {
  TORCH_CHECK(q.is_cpu() && p.is_cpu(), "spd_solve: CPU kernel got q on ", q.device(),
              " and p on ", p.device());
  return spd_solve_with(q, p, CholeskyBackend{&factor_cpu, &solve_cpu});
}

}  // namespace
}  // namespace lorm

TORCH_LIBRARY_IMPL(lorm_ext, CPU, m) { m.impl("spd_solve", &lorm::spd_solve_cpu); }
