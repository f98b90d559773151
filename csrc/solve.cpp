// Semantics: X = p @ pinv(q) in float64 (hermitian pinv, default cut-off
// rtol = d * eps), with subnormal entries of q counted as 0 and a q that is clearly
// indefinite refused. Fast path: Cholesky, accepted only when every pivot is far above
// that cut-off; every other matrix of the batch goes through an eigendecomposition
// pseudo-inverse with pinv's exact cut-off.
#include "solve.h"

#include <limits>
#include <string>

#include "checks.h"

namespace lorm {
namespace {

// A Cholesky whose smallest squared pivot is below this fraction of the largest
// diagonal entry is treated as numerically singular. The pivots bound the smallest
// eigenvalue from above, so the margin (1e-9 against pinv's d * 2.2e-16) keeps the
// fast path to matrices whose inverse pinv would not truncate.
constexpr double kPivotFloor = 1e-9;

// An eigenvalue below -kNegativeRtol * max|eigenvalue| is not round-off of a PSD sum of
// float32 Grams (that stays orders of magnitude smaller): q is refused as indefinite.
constexpr double kNegativeRtol = 1e-4;

double pinv_rtol(int64_t d) { return static_cast<double>(d) * std::numeric_limits<double>::epsilon(); }

// 1/v where |v| is above rtol * max|v| along the last dim, else 0 (pinv's rule).
at::Tensor truncated_reciprocal(const at::Tensor& v, int64_t d) {
  const at::Tensor magnitude = v.abs();
  const at::Tensor cutoff = magnitude.amax(-1, /*keepdim=*/true) * pinv_rtol(d);
  return at::where(magnitude > cutoff, v.reciprocal(), at::zeros_like(v));
}

// q in float64 with every subnormal entry set to 0: 1 / subnormal overflows, and a
// subnormal is no information pinv should invert.
at::Tensor flushed_double(const at::Tensor& q) {
  const at::Tensor q64 = q.to(at::kDouble);
  return at::where(q64.abs() < std::numeric_limits<double>::min(), at::zeros_like(q64), q64);
}

void check_not_indefinite(const at::Tensor& w) {
  const at::Tensor smallest = w.amin(-1);
  const at::Tensor largest = w.abs().amax(-1);
  const at::Tensor indefinite = smallest < -kNegativeRtol * largest;
  if (!indefinite.any().item<bool>()) return;
  const int64_t i = indefinite.nonzero()[0][0].item<int64_t>();
  TORCH_CHECK_VALUE(false, "spd_solve: q", w.size(0) > 1 ? " (batch entry " + std::to_string(i) + ")" : "",
                    " is not positive semi-definite: eigenvalue ", smallest[i].item<double>(),
                    " against a largest magnitude of ", largest[i].item<double>(),
                    " (beyond round-off; a sum of Grams cannot have it)");
}

at::Tensor diagonal_solve(const at::Tensor& q64, const at::Tensor& p64) {
  if (q64.numel() > 0) check_not_indefinite(q64.reshape({-1, q64.size(-1)}));
  return p64 * truncated_reciprocal(q64, p64.size(-1)).unsqueeze(-2);
}

// p (b, m, d) @ pinv(q (b, d, d)) through eigh.
at::Tensor eigen_pinv_solve(const at::Tensor& q, const at::Tensor& p) {
  auto [w, v] = at::linalg_eigh(q);
  check_not_indefinite(w);
  const at::Tensor w_inv = truncated_reciprocal(w, q.size(-1));
  return at::matmul(at::matmul(p, v) * w_inv.unsqueeze(-2), v.mT());
}

// Which matrices of the batch the Cholesky path may answer: status 0 and every
// squared pivot above kPivotFloor * max diag(q). NaN pivots fail the comparison.
at::Tensor cholesky_accepted(const at::Tensor& status, const at::Tensor& factor,
                             const at::Tensor& q_diag_max) {
  const at::Tensor pivots = factor.diagonal(0, -2, -1);
  const at::Tensor smallest = (pivots * pivots).amin(-1);
  return status.eq(0).logical_and(smallest > q_diag_max * kPivotFloor);
}

}  // namespace

at::Tensor spd_solve_with(const at::Tensor& q, const at::Tensor& p,
                          const CholeskyBackend& backend) {
  check_spd_solve(q, p);
  const auto out_dtype = at::promote_types(q.scalar_type(), p.scalar_type());
  const at::Tensor p64 = p.to(at::kDouble);
  if (q.dim() == p.dim() - 1) return diagonal_solve(flushed_double(q), p64).to(out_dtype);

  const int64_t m = p.size(-2), d = p.size(-1);
  if (p.numel() == 0 || d == 0) return at::zeros(p.sizes(), p.options().dtype(out_dtype));
  const at::Tensor q_batch = flushed_double(q).reshape({-1, d, d}).contiguous();
  const at::Tensor x = p64.reshape({-1, m, d}).clone(at::MemoryFormat::Contiguous);
  const at::Tensor factor = q_batch.clone(at::MemoryFormat::Contiguous);
  const at::Tensor status = backend.factor(factor);
  const at::Tensor q_diag_max = q_batch.diagonal(0, -2, -1).amax(-1);
  const at::Tensor accepted = cholesky_accepted(status, factor, q_diag_max).cpu();

  if (accepted.all().item<bool>()) {
    backend.solve(factor, x);
  } else {
    const at::Tensor good = accepted.nonzero().flatten().to(q.device());
    const at::Tensor bad = accepted.logical_not().nonzero().flatten().to(q.device());
    if (good.numel() > 0) {
      const at::Tensor x_good = x.index_select(0, good).contiguous();
      backend.solve(factor.index_select(0, good).contiguous(), x_good);
      x.index_copy_(0, good, x_good);
    }
    x.index_copy_(0, bad, eigen_pinv_solve(q_batch.index_select(0, bad), x.index_select(0, bad)));
  }
  return x.reshape(p.sizes()).to(out_dtype);
}

}  // namespace lorm
