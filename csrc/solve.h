// spd_solve, written once for every device around a per-device Cholesky.
#pragma once

#include "stable.h"

namespace lorm {

// The two device-specific steps of the Cholesky fast path. Both work in place on
// contiguous float64 batches.
struct CholeskyBackend {
  // Factors every q (b, d, d) in place (lower factor, row-major); returns the
  // per-matrix status (b,) int32 on q's device: 0 when the factorisation succeeded.
  Tensor (*factor)(const Tensor& q);
  // Overwrites p (b, m, d) with X such that X @ q = p, given q's factor from `factor`.
  void (*solve)(const Tensor& factor, const Tensor& p);
};

// X (..., m, d) with X @ q = p; see the schema in ops.cpp and docs/ops.md.
Tensor spd_solve_with(const Tensor& q, const Tensor& p, const CholeskyBackend& backend);

}  // namespace lorm
