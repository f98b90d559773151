// Semantics: X = p @ pinv(q) in float64 (hermitian pinv, default cut-off
// rtol = d * eps), with subnormal entries of q counted as 0 and a q that is clearly
// indefinite refused. Fast path: Cholesky, accepted only when every pivot is far above
// that cut-off; every other matrix of the batch goes through an eigendecomposition
// pseudo-inverse with pinv's exact cut-off.
#include "solve.h"

#include <cmath>
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

// Refinement stops after this many corrections (LAPACK's dsposv allows 30; a q the
// float32 factor can serve converges in two or three).
constexpr int kMaxRefinements = 10;

// Mixed precision (LAPACK dsposv's scheme): X from a float32 Cholesky factor of q
// (q32, the backend's `narrowed` copy of q; q_norm its |q|_inf (b, 1)),
// then corrections dX = solve32(p - X q) with the residual in float64, until every row
// of X meets dsposv's test |r|_max <= |x|_max * |q|_inf * eps * sqrt(d). Returns X
// (b, m, d) and which matrices of the batch converged (b,) bool on the CPU; only their
// rows of X are solutions. A q the float32 factor cannot serve (cond(q) beyond ~1e7)
// does not converge.
std::tuple<Tensor, Tensor> refine_from_float32(const Tensor& q_batch, const Tensor& q32, const Tensor& q_norm,
                                               const Tensor& p_batch, const CholeskyBackend& backend) {
  const int64_t d = q_batch.size(-1);
  auto [factor32, status] = backend.factor(q32);
  const Tensor factored = aten::eq(status, scalar_like(status, 0.0));  // (b,)
  const double rtol = std::numeric_limits<double>::epsilon() * std::sqrt(static_cast<double>(d));
  const Tensor row_tolerance = aten::mul(q_norm, scalar_like(q_norm, rtol));
  const Tensor x = zeros(p_batch.sizes(), ScalarType::Double, p_batch);
  Tensor residual = p_batch, converged = factored;
  for (int step = 0; step <= kMaxRefinements; ++step) {
    const Tensor correction = torch::stable::contiguous(to_dtype(residual, ScalarType::Float));
    backend.solve(factor32, correction);
    add_into(x, correction);
    residual = torch::stable::subtract(p_batch, aten::bmm(x, q_batch));
    const Tensor small = aten::le(aten::amax(aten::abs(residual), -1),
                                  aten::mul(aten::amax(aten::abs(x), -1), row_tolerance));
    converged = aten::logical_and(factored, aten::all_dim(small, -1));
    if (item_bool(aten::all(aten::logical_or(converged, aten::logical_not(factored))))) break;
  }
  return {x, to_cpu(converged)};
}

// X (b, m, d) with X @ q = p for each matrix of a contiguous float64 batch: Cholesky
// where it is accepted, eigendecomposition pseudo-inverse elsewhere.
Tensor solve_float64(const Tensor& q_batch, const Tensor& p_batch, const CholeskyBackend& backend) {
  auto [factor, status] = backend.factor(q_batch);
  const Tensor q_diag_max = aten::amax(aten::diagonal(q_batch, -2, -1), -1);
  const Tensor accepted = to_cpu(cholesky_accepted(status, factor, q_diag_max));
  const Tensor x = contiguous_copy(p_batch);
  if (item_bool(aten::all(accepted))) {
    backend.solve(factor, x);
    return x;
  }
  const Tensor good = to_device_of(torch::stable::flatten(aten::nonzero(accepted)), q_batch);
  const Tensor bad = to_device_of(torch::stable::flatten(aten::nonzero(aten::logical_not(accepted))), q_batch);
  if (good.numel() > 0) {
    const Tensor x_good = torch::stable::contiguous(aten::index_select(x, 0, good));
    backend.solve(torch::stable::contiguous(aten::index_select(factor, 0, good)), x_good);
    aten::index_copy_(x, 0, good, x_good);
  }
  aten::index_copy_(x, 0, bad,
                    eigen_pinv_solve(aten::index_select(q_batch, 0, bad), aten::index_select(x, 0, bad)));
  return x;
}

}  // namespace

// Subnormal entries of q count as 0: 1 / subnormal overflows, and a subnormal is no
// information pinv should invert.
Tensor flushed_any_device(const Tensor& q) {
  const Tensor tiny = scalar_like(q, std::numeric_limits<double>::min());
  return aten::where(aten::lt(aten::abs(q), tiny), scalar_like(q, 0.0), q);
}

Tensor spd_solve_with(const Tensor& q, const Tensor& p, int64_t mixed_min_dim,
                      const CholeskyBackend& backend) {
  check_spd_solve(q, p);
  const ScalarType out_dtype = promote_floating(q.scalar_type(), p.scalar_type());
  const Tensor p64 = to_dtype(p, kDouble);
  const Tensor q64 = torch::stable::contiguous(to_dtype(q, kDouble));
  if (q.dim() == p.dim() - 1) return to_dtype(diagonal_solve(backend.flushed(q64), p64), out_dtype);

  const int64_t m = p.size(-2), d = p.size(-1);
  if (p.numel() == 0 || d == 0) return zeros(p.sizes(), out_dtype, p);
  const Tensor q_batch = torch::stable::reshape(q64, {-1, d, d});
  const Tensor p_batch = torch::stable::contiguous(torch::stable::reshape(p64, {-1, m, d}));
  if (backend.narrowed != nullptr && mixed_min_dim > 0 && d >= mixed_min_dim) {
    // One read of q gives the float32 copy, the norms and whether to flush at all.
    auto [q32, q_norm, subnormal] = backend.narrowed(q_batch);
    const Tensor q_flushed = subnormal ? backend.flushed(q_batch) : q_batch;
    auto [x, converged] = refine_from_float32(q_flushed, q32, q_norm, p_batch, backend);
    if (!item_bool(aten::all(converged))) {
      const Tensor rest = to_device_of(torch::stable::flatten(aten::nonzero(aten::logical_not(converged))), q);
      aten::index_copy_(x, 0, rest,
                        solve_float64(aten::index_select(q_flushed, 0, rest), aten::index_select(p_batch, 0, rest), backend));
    }
    return to_dtype(torch::stable::reshape(x, p.sizes()), out_dtype);
  }
  return to_dtype(torch::stable::reshape(solve_float64(backend.flushed(q_batch), p_batch, backend), p.sizes()), out_dtype);
}

}  // namespace lorm
