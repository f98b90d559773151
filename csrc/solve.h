// spd_solve, written once for every device around a per-device Cholesky.
#pragma once

#include <tuple>

#include "stable.h"

namespace lorm {

// The two device-specific steps of the Cholesky fast path, on contiguous batches.
struct CholeskyBackend {
  // The lower Cholesky factor (row-major) of every q (b, d, d), a new tensor, and the
  // per-matrix status (b,) int32 on q's device, 0 where the factorisation succeeded.
  std::tuple<Tensor, Tensor> (*factor)(const Tensor& q);
  // Overwrites p (b, m, d) with X such that X @ q = p, given q's factor from `factor`.
  void (*solve)(const Tensor& factor, const Tensor& p);
  // q (contiguous float64) with every subnormal entry set to 0: q itself when it has
  // none, else a copy.
  Tensor (*flushed)(const Tensor& q);
  // The mixed-precision path, or null where there is none: q (b, d, d) contiguous
  // float64 (not yet flushed) rounded to float32 (a subnormal rounds to 0), |q|_inf per
  // matrix (b, 1) float64, and whether q holds a subnormal. With it, factor and solve
  // also take float32, and matrices with d >= mixed_min_dim are first solved by a
  // float32 factor refined in float64.
  std::tuple<Tensor, Tensor, bool> (*narrowed)(const Tensor& q);
};

// `flushed` of any device through ATen ops (a copy, always).
Tensor flushed_any_device(const Tensor& q);

// X (..., m, d) with X @ q = p; see the schema in ops.cpp and docs/ops.md.
Tensor spd_solve_with(const Tensor& q, const Tensor& p, int64_t mixed_min_dim,
                      const CholeskyBackend& backend);

}  // namespace lorm
