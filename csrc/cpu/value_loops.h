// The inner loops of inspect_terms, add_terms and spd_solve's float32 copy on CPU, written with explicit
// 8-wide vectors so they run at memory speed (the compiler left the scalar versions
// unvectorised). Each is compiled twice, for AVX2 and for baseline x86-64, and runs
// the copy the CPU supports (vectors.h: LORM_TWO_ISAS; LORM_CPU_BASELINE=1 forces the
// baseline one), so one wheel serves every x86-64 machine.
#pragma once

#include <cstdint>

namespace lorm {

// max |v| over finite and infinite values (NaNs skipped), whether all are finite, and
// the smallest v (NaNs skipped; +inf when there is none) of data[0, n).
struct ValueScan {
  float max_abs;
  bool finite;
  float min;
};
ValueScan scan_float32(const float* data, int64_t n);

// Whether t[i][j] == t[j][i] for every row i in [row0, row1) and every column j >= i of
// a (d, d) row-major t (a NaN pair is unequal). Rows are read in 8 x 8 blocks; the
// mirrored block is transposed in registers.
bool symmetric_rows_float32(const float* t, int64_t d, int64_t row0, int64_t row1);

// out[j] += double(in[j]) for j in [0, n).
void add_float32_into_float64(double* out, const float* in, int64_t n);

// out[j] = float(in[j]) for j in [0, n) (a subnormal double rounds to 0), the sum of
// |in[j]| in float64, and whether any in[j] is subnormal.
struct NarrowedRow {
  double abs_sum;
  bool subnormal;
};
NarrowedRow narrow_float64(const double* in, float* out, int64_t n);

}  // namespace lorm
