// Semantics: X = p @ pinv(q) in float64 (hermitian pinv, default cut-off
// rtol = d * eps), with subnormal entries of q counted as 0 and a q that is clearly
// indefinite refused. Fast path: Cholesky, accepted only when every pivot is far above
// that cut-off; every other matrix of the batch goes through an eigendecomposition
// pseudo-inverse with pinv's exact cut-off.
#include "solve.h"

#include <limits>
#include <string>
#include <vector>

#include "checks.h"

namespace lorm {
namespace {

constexpr ScalarType kDouble = ScalarType::Double;

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
Tensor truncated_reciprocal(const Tensor& v, int64_t d) {
  const Tensor magnitude = aten::abs(v);
  const Tensor cutoff = aten::mul(aten::amax(magnitude, -1, /*keepdim=*/true), scalar_like(v, pinv_rtol(d)));
  return aten::where(aten::gt(magnitude, cutoff), aten::reciprocal(v), scalar_like(v, 0.0));
}

// q in float64 with every subnormal entry set to 0: 1 / subnormal overflows, and a
// subnormal is no information pinv should invert.
Tensor flushed_double(const Tensor& q) {
  const Tensor q64 = to_dtype(q, kDouble);
  const Tensor tiny = scalar_like(q64, std::numeric_limits<double>::min());
  return aten::where(aten::lt(aten::abs(q64), tiny), scalar_like(q64, 0.0), q64);
}

// w (b, d): refuses any row whose smallest entry is clearly negative.
void check_not_indefinite(const Tensor& w) {
  const Tensor smallest = aten::amin(w, -1);
  const Tensor largest = aten::amax(aten::abs(w), -1);
  const Tensor indefinite = aten::lt(smallest, aten::mul(largest, scalar_like(largest, -kNegativeRtol)));
  if (!item_bool(aten::any(indefinite))) return;
  const int64_t i = item_long(torch::stable::select(aten::nonzero(indefinite), 1, 0));
  const std::string where_ = w.size(0) > 1 ? concat(" (batch entry ", i, ")") : "";
  LORM_CHECK_VALUE(false, "spd_solve: q", where_, " is not positive semi-definite: eigenvalue ",
                   item_double(torch::stable::select(smallest, 0, i)), " against a largest magnitude of ",
                   item_double(torch::stable::select(largest, 0, i)),
                   " (beyond round-off; a sum of Grams cannot have it)");
}

Tensor diagonal_solve(const Tensor& q64, const Tensor& p64) {
  if (q64.numel() > 0) check_not_indefinite(torch::stable::reshape(q64, {-1, q64.size(-1)}));
  return aten::mul(p64, torch::stable::unsqueeze(truncated_reciprocal(q64, p64.size(-1)), -2));
}

// p (b, m, d) @ pinv(q (b, d, d)) through eigh.
Tensor eigen_pinv_solve(const Tensor& q, const Tensor& p) {
  auto [w, v] = aten::linalg_eigh(q);
  check_not_indefinite(w);
  const Tensor w_inv = truncated_reciprocal(w, q.size(-1));
  return torch::stable::matmul(aten::mul(torch::stable::matmul(p, v), torch::stable::unsqueeze(w_inv, -2)),
                               mT(v));
}

// Which matrices of the batch the Cholesky path may answer: status 0 and every
// squared pivot above kPivotFloor * max diag(q). NaN pivots fail the comparison.
Tensor cholesky_accepted(const Tensor& status, const Tensor& factor, const Tensor& q_diag_max) {
  const Tensor pivots = aten::diagonal(factor, -2, -1);
  const Tensor smallest = aten::amin(aten::mul(pivots, pivots), -1);
  const Tensor floor = aten::mul(q_diag_max, scalar_like(q_diag_max, kPivotFloor));
  return aten::logical_and(aten::eq(status, scalar_like(status, 0.0)), aten::gt(smallest, floor));
}

Tensor contiguous_copy(const Tensor& t) {
  return torch::stable::contiguous(torch::stable::clone(t));
}

}  // namespace

Tensor spd_solve_with(const Tensor& q, const Tensor& p, const CholeskyBackend& backend) {
  check_spd_solve(q, p);
  const ScalarType out_dtype = promote_floating(q.scalar_type(), p.scalar_type());
  const Tensor p64 = to_dtype(p, kDouble);
  if (q.dim() == p.dim() - 1) return to_dtype(diagonal_solve(flushed_double(q), p64), out_dtype);

  const int64_t m = p.size(-2), d = p.size(-1);
  if (p.numel() == 0 || d == 0) return zeros(p.sizes(), out_dtype, p);
  const Tensor q_batch = torch::stable::contiguous(torch::stable::reshape(flushed_double(q), {-1, d, d}));
  const Tensor x = contiguous_copy(torch::stable::reshape(p64, {-1, m, d}));
  const Tensor factor = contiguous_copy(q_batch);
  const Tensor status = backend.factor(factor);
  const Tensor q_diag_max = aten::amax(aten::diagonal(q_batch, -2, -1), -1);
  const Tensor accepted = to_cpu(cholesky_accepted(status, factor, q_diag_max));

  if (item_bool(aten::all(accepted))) {
    backend.solve(factor, x);
  } else {
    const Tensor good = to_device_of(torch::stable::flatten(aten::nonzero(accepted)), q);
    const Tensor bad = to_device_of(torch::stable::flatten(aten::nonzero(aten::logical_not(accepted))), q);
    if (good.numel() > 0) {
      const Tensor x_good = torch::stable::contiguous(aten::index_select(x, 0, good));
      backend.solve(torch::stable::contiguous(aten::index_select(factor, 0, good)), x_good);
      aten::index_copy_(x, 0, good, x_good);
    }
    aten::index_copy_(x, 0, bad,
                      eigen_pinv_solve(aten::index_select(q_batch, 0, bad), aten::index_select(x, 0, bad)));
  }
  return to_dtype(torch::stable::reshape(x, p.sizes()), out_dtype);
}

}  // namespace lorm
