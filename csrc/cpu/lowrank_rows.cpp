#include "lowrank_rows.h"

#include <algorithm>
#include <vector>

#include "vectors.h"

namespace lorm {
namespace {

using namespace vec;

constexpr int kRanks = 8;  // ranks per pass over a row: one accumulator register each

// z[k] = a[k] . x for the (at most kRanks) rows a[k] = a + k * d, in float64; on the
// first pass (diag not null) also diag += x * x. x is one row in float32.
template <int ranks>
LORM_INLINE void project_row(const float* x, int64_t d, const double* a, double* z, double* diag) {
  using F64 = Vec<double, 4>;
  F64 acc[ranks] = {};
  int64_t j = 0;
  for (; j + 4 <= d; j += 4) {
    const F64 v = __builtin_convertvector(load<Vec<float, 4>>(x + j), F64);
    if (diag != nullptr) store(diag + j, load<F64>(diag + j) + v * v);
    for (int k = 0; k < ranks; ++k) acc[k] += v * load<F64>(a + k * d + j);
  }
  for (int k = 0; k < ranks; ++k) z[k] = (acc[k][0] + acc[k][1]) + (acc[k][2] + acc[k][3]);
  for (; j < d; ++j) {
    const double v = x[j];
    if (diag != nullptr) diag[j] += v * v;
    for (int k = 0; k < ranks; ++k) z[k] += v * a[k * d + j];
  }
}

// Inlined into each copy of lowrank_rows_float32, so every copy is built for its ISA.
LORM_INLINE void project_row_any(const float* x, int64_t d, const double* a, int64_t ranks, double* z, double* diag) {
  switch (ranks) {  // a compile-time count keeps the accumulators in registers
    case 8: return project_row<8>(x, d, a, z, diag);
    case 7: return project_row<7>(x, d, a, z, diag);
    case 6: return project_row<6>(x, d, a, z, diag);
    case 5: return project_row<5>(x, d, a, z, diag);
    case 4: return project_row<4>(x, d, a, z, diag);
    case 3: return project_row<3>(x, d, a, z, diag);
    case 2: return project_row<2>(x, d, a, z, diag);
    default: return project_row<1>(x, d, a, z, diag);
  }
}

LORM_INLINE void lowrank_rows_body(const float* x, int64_t row_stride, int64_t n, int64_t d,
                                   const double* a, int64_t r, double* zz, double* diag) {
  std::vector<double> z(r);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = x + i * row_stride;
    for (int64_t k0 = 0; k0 < r; k0 += kRanks) {  // the row stays in L1 across passes
      project_row_any(row, d, a + k0 * d, std::min<int64_t>(kRanks, r - k0), z.data() + k0,
                      k0 == 0 ? diag : nullptr);
    }
    for (int64_t k = 0; k < r; ++k)
      for (int64_t l = 0; l < r; ++l) zz[k * r + l] += z[k] * z[l];
  }
}

}  // namespace

LORM_TWO_ISAS(void, lowrank_rows_float32,
              (const float* x, int64_t row_stride, int64_t n, int64_t d, const double* a, int64_t r,
               double* zz, double* diag),
              (x, row_stride, n, d, a, r, zz, diag), lowrank_rows_body, lowrank_rows_body)

}  // namespace lorm
