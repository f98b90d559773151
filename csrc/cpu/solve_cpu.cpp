// CPU Cholesky for spd_solve: LAPACK through ATen's linalg ops.
#include "../solve.h"

namespace lorm {
namespace {

Tensor factor_cpu(const Tensor& q) {
  auto [lower, info] = aten::linalg_cholesky_ex(q);
  Tensor target = q;
  torch::stable::copy_(target, lower);
  return info;
}

void solve_cpu(const Tensor& factor, const Tensor& p) {
  // X q = p  <=>  q X^T = p^T.
  Tensor target = p;
  torch::stable::copy_(target, mT(aten::cholesky_solve(mT(p), factor, /*upper=*/false)));
}

Tensor spd_solve_cpu(const Tensor& q, const Tensor& p) {
  LORM_CHECK(q.is_cpu() && p.is_cpu(), "spd_solve: CPU kernel got q on ", device_name(q),
             " and p on ", device_name(p));
  return spd_solve_with(q, p, CholeskyBackend{&factor_cpu, &solve_cpu});
}

}  // namespace
}  // namespace lorm

STABLE_TORCH_LIBRARY_IMPL(lorm_ext, CPU, m) { m.impl("spd_solve", TORCH_BOX(&lorm::spd_solve_cpu)); }
