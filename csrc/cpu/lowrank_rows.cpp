#include "lowrank_rows.h"

#include <algorithm>
#include <vector>

#include "vectors.h"

namespace lorm {
namespace {

using namespace vec;

// z[k] = a[k] . x for the `ranks` rows a[k] = a + k * d, in float64; on the first pass
// (diag not null) also diag += x * x. x is one row in float32. Column j adds into lane
// j % 4 of rank k's accumulator, held as 4 / W vectors of W doubles (W = 4 for AVX2,
// 2 for SSE2: wider than the ISA, GCC keeps vectors in memory), and the lanes are
// summed as (l0 + l1) + (l2 + l3): the same bits at either width.
template <int W, int ranks>
LORM_INLINE void project_row(const float* x, int64_t d, const double* a, double* z, double* diag) {
  using F64 = Vec<double, W>;
  constexpr int kParts = 4 / W;
  F64 acc[ranks][kParts] = {};
  int64_t j = 0;
  for (; j + 4 <= d; j += 4) {
    for (int part = 0; part < kParts; ++part) {
      const int64_t at = j + W * part;
      const F64 v = __builtin_convertvector(load<Vec<float, W>>(x + at), F64);
      if (diag != nullptr) store(diag + at, load<F64>(diag + at) + v * v);
      for (int k = 0; k < ranks; ++k) acc[k][part] += v * load<F64>(a + k * d + at);
    }
  }
  for (int k = 0; k < ranks; ++k) {
    double lane[4];
    for (int part = 0; part < kParts; ++part)
      for (int l = 0; l < W; ++l) lane[W * part + l] = acc[k][part][l];
    z[k] = (lane[0] + lane[1]) + (lane[2] + lane[3]);
  }
  for (; j < d; ++j) {
    const double v = x[j];
    if (diag != nullptr) diag[j] += v * v;
    for (int k = 0; k < ranks; ++k) z[k] += v * a[k * d + j];
  }
}

// Inlined into each copy of lowrank_rows_float32, so every copy is built for its ISA.
template <int W>
LORM_INLINE void project_row_any(const float* x, int64_t d, const double* a, int64_t ranks, double* z, double* diag) {
  switch (ranks) {  // a compile-time count keeps the accumulators in registers
    case 8: return project_row<W, 8>(x, d, a, z, diag);
    case 7: return project_row<W, 7>(x, d, a, z, diag);
    case 6: return project_row<W, 6>(x, d, a, z, diag);
    case 5: return project_row<W, 5>(x, d, a, z, diag);
    case 4: return project_row<W, 4>(x, d, a, z, diag);
    case 3: return project_row<W, 3>(x, d, a, z, diag);
    case 2: return project_row<W, 2>(x, d, a, z, diag);
    default: return project_row<W, 1>(x, d, a, z, diag);
  }
}

// Up to kRanks ranks per pass over a row (it stays in L1 across passes): 16 registers
// of accumulators either way (AVX2: 8 ranks x 1 vector; SSE2: 4 ranks x 2 vectors).
template <int W>
LORM_INLINE void lowrank_rows_body(const float* x, int64_t row_stride, int64_t n, int64_t d,
                                   const double* a, int64_t r, double* zz, double* diag) {
  constexpr int64_t kRanks = 2 * W;
  std::vector<double> z(r);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = x + i * row_stride;
    for (int64_t k0 = 0; k0 < r; k0 += kRanks) {
      project_row_any<W>(row, d, a + k0 * d, std::min<int64_t>(kRanks, r - k0), z.data() + k0,
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
              (x, row_stride, n, d, a, r, zz, diag), lowrank_rows_body<4>, lowrank_rows_body<2>)

}  // namespace lorm
