// CPU Cholesky for spd_solve: LAPACK through ATen's linalg ops, float64 and float32
// (the float32 factor of the mixed-precision path).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "../solve.h"
#include "value_loops.h"

namespace lorm {
namespace {

constexpr int64_t kScanGrain = 1 << 16;

bool is_subnormal(double v) { return v != 0.0 && std::abs(v) < std::numeric_limits<double>::min(); }

// One parallel read of q; a copy only in the rare case that it holds a subnormal.
Tensor flushed_cpu(const Tensor& q) {
  const double* data = q.const_data_ptr<double>();
  std::atomic<bool> found{false};
  torch::stable::parallel_for(0, q.numel(), kScanGrain, [&](int64_t begin, int64_t end) {
    bool mine = false;
    for (int64_t i = begin; i < end; ++i) mine |= is_subnormal(data[i]);
    if (mine) found = true;
  });
  if (!found) return q;
  const Tensor out = torch::stable::clone(q);
  double* values = out.mutable_data_ptr<double>();
  for (int64_t i = 0; i < out.numel(); ++i)
    if (is_subnormal(values[i])) values[i] = 0.0;
  return out;
}

// One parallel read of q (b, d, d): its float32 copy, |q|_inf (b, 1) and whether any
// entry is subnormal.
std::tuple<Tensor, Tensor, bool> narrowed_cpu(const Tensor& q) {
  const int64_t b = q.size(0), d = q.size(1);
  const Tensor q32 = empty_cpu({b, d, d}, ScalarType::Float);
  const double* in = q.const_data_ptr<double>();
  float* out = q32.mutable_data_ptr<float>();
  std::vector<NarrowedRow> rows(b * d);
  torch::stable::parallel_for(0, b * d, std::max<int64_t>(1, kScanGrain / std::max<int64_t>(d, 1)),
                              [&](int64_t r0, int64_t r1) {
                                for (int64_t r = r0; r < r1; ++r) rows[r] = narrow_float64(in + r * d, out + r * d, d);
                              });
  const Tensor norms = empty_cpu({b, 1}, ScalarType::Double);
  double* norm = norms.mutable_data_ptr<double>();
  bool subnormal = false;
  for (int64_t k = 0; k < b; ++k) {
    norm[k] = 0.0;
    for (int64_t i = 0; i < d; ++i) {
      norm[k] = std::max(norm[k], rows[k * d + i].abs_sum);
      subnormal = subnormal || rows[k * d + i].subnormal;
    }
  }
  return {q32, norms, subnormal};
}

std::tuple<Tensor, Tensor> factor_cpu(const Tensor& q) { return aten::linalg_cholesky_ex(q); }

void solve_cpu(const Tensor& factor, const Tensor& p) {
  // X q = p  <=>  L (L^T X^T) = p^T: two triangular solves on views of L. Measured 3.5x
  // faster than cholesky_solve (which copies the factor) at d = 3072, m = 8.
  const Tensor y = aten::solve_triangular(factor, mT(p), /*upper=*/false);
  Tensor target = p;
  torch::stable::copy_(target, mT(aten::solve_triangular(mT(factor), y, /*upper=*/true)));
}

Tensor spd_solve_cpu(const Tensor& q, const Tensor& p, int64_t mixed_min_dim) {
  LORM_CHECK(q.is_cpu() && p.is_cpu(), "spd_solve: CPU kernel got q on ", device_name(q),
             " and p on ", device_name(p));
  return spd_solve_with(q, p, mixed_min_dim, CholeskyBackend{&factor_cpu, &solve_cpu, &flushed_cpu, &narrowed_cpu});
}

}  // namespace
}  // namespace lorm

STABLE_TORCH_LIBRARY_IMPL(lorm_ext, CPU, m) { m.impl("spd_solve", TORCH_BOX(&lorm::spd_solve_cpu)); }
