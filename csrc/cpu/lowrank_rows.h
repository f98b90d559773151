// The B-step statistics of float32 rows in one read, for the CPU lowrank_gram_update:
// z = a x (r values per row, float64), z z^T and x * x, without the float64 copy of
// the rows and the two BLAS passes the blocked path needs.
#pragma once

#include <cstdint>

namespace lorm {

// For the n rows x_i (d contiguous floats each, row i at x + i * row_stride):
// zz (r, r) += sum_i z_i z_i^T with z_i = a x_i, a (r, d) row-major float64; and, when
// diag is not null, diag (d,) += sum_i x_i * x_i. All arithmetic in float64.
void lowrank_rows_float32(const float* x, int64_t row_stride, int64_t n, int64_t d, const double* a,
                          int64_t r, double* zz, double* diag);

}  // namespace lorm
