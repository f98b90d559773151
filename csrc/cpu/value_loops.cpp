#include "value_loops.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>

#include "vectors.h"

namespace lorm {
namespace {

using namespace vec;

inline f32x8 broadcast(float x) { return f32x8{x, x, x, x, x, x, x, x}; }

inline f32x8 magnitude(f32x8 v) { return (f32x8)((i32x8)v & 0x7fffffff); }

// rows[0..7] := its transpose (the classic unpack / shuffle / lane-swap network).
inline void transpose8(f32x8 (&r)[8]) {
  f32x8 t[8], u[8];
  for (int k = 0; k < 8; k += 2) {
    t[k] = LORM_SHUFFLE(r[k], r[k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[k + 1] = LORM_SHUFFLE(r[k], r[k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int k = 0; k < 8; k += 4) {
    u[k] = LORM_SHUFFLE(t[k], t[k + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    u[k + 1] = LORM_SHUFFLE(t[k], t[k + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    u[k + 2] = LORM_SHUFFLE(t[k + 1], t[k + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    u[k + 3] = LORM_SHUFFLE(t[k + 1], t[k + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int k = 0; k < 4; ++k) {
    r[k] = LORM_SHUFFLE(u[k], u[k + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[k + 4] = LORM_SHUFFLE(u[k], u[k + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// All lanes but lane r set: row r of an 8 x 8 block on the diagonal, less t[i][i].
inline i32x8 off_diagonal(int r) {
  const i32x8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
  return lane != r;
}

inline bool any_lane(i32x8 m) {
  int32_t acc = 0;
  for (int k = 0; k < 8; ++k) acc |= m[k];
  return acc != 0;
}

// Whether t[i][j] == t[j][i] for i in [i0, i1), j in [j0, d), j > i: the scalar edges.
bool symmetric_scalar(const float* t, int64_t d, int64_t i0, int64_t i1, int64_t j0) {
  bool same = true;
  for (int64_t i = i0; i < i1; ++i)
    for (int64_t j = std::max(j0, i + 1); j < d; ++j) same &= t[i * d + j] == t[j * d + i];
  return same;
}

}  // namespace

LORM_CLONES ValueScan scan_float32(const float* data, int64_t n) {
  // a > m ? a : m skips NaNs (MAXPS semantics); z += a * 0 turns NaN at the first Inf
  // or NaN. Two accumulators of each keep the adder and comparator pipelines busy.
  const f32x8 inf = broadcast(std::numeric_limits<float>::infinity());
  f32x8 largest[2] = {}, smallest[2] = {inf, inf}, zero[2] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int w = 0; w < 2; ++w) {
      const f32x8 v = load8(data + i + 8 * w), a = magnitude(v);
      largest[w] = a > largest[w] ? a : largest[w];
      smallest[w] = v < smallest[w] ? v : smallest[w];
      zero[w] += a * 0.0f;
    }
  }
  float max_abs = 0.0f, min = std::numeric_limits<float>::infinity(), z = 0.0f;
  for (int w = 0; w < 2; ++w) {
    for (int k = 0; k < 8; ++k) {
      max_abs = largest[w][k] > max_abs ? largest[w][k] : max_abs;
      min = smallest[w][k] < min ? smallest[w][k] : min;
      z += zero[w][k];
    }
  }
  for (; i < n; ++i) {
    const float v = data[i], a = std::abs(v);
    max_abs = a > max_abs ? a : max_abs;
    min = v < min ? v : min;
    z += a * 0.0f;
  }
  return ValueScan{max_abs, z == 0.0f, min};
}

LORM_CLONES bool symmetric_rows_float32(const float* t, int64_t d, int64_t row0, int64_t row1) {
  int64_t i0 = row0;
  for (; i0 + 8 <= row1; i0 += 8) {
    i32x8 differ = {};
    int64_t j0 = i0;
    for (; j0 + 8 <= d; j0 += 8) {
      f32x8 mirror[8];
      for (int r = 0; r < 8; ++r) mirror[r] = load8(t + (j0 + r) * d + i0);
      transpose8(mirror);
      for (int r = 0; r < 8; ++r) {
        const i32x8 unequal = load8(t + (i0 + r) * d + j0) != mirror[r];
        differ |= j0 == i0 ? unequal & off_diagonal(r) : unequal;  // t[i][i] may be NaN
      }
    }
    if (any_lane(differ) || !symmetric_scalar(t, d, i0, i0 + 8, j0)) return false;
  }
  return symmetric_scalar(t, d, i0, row1, i0);  // rows past the last whole block
}

LORM_CLONES void add_float32_into_float64(double* __restrict out, const float* __restrict in, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] += static_cast<double>(in[j]);
}

LORM_CLONES NarrowedRow narrow_float64(const double* __restrict in, float* __restrict out, int64_t n) {
  const f64x4 tiny = {DBL_MIN, DBL_MIN, DBL_MIN, DBL_MIN}, zero = {};
  f64x4 sum[2] = {};
  i64x4 subnormal = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int w = 0; w < 2; ++w) {
      const f64x4 v = load4(in + i + 4 * w);
      const f64x4 a = (f64x4)((i64x4)v & 0x7fffffffffffffffLL);
      sum[w] += a;
      subnormal |= (a < tiny) & (a != zero);
      const f32x4 narrow = __builtin_convertvector(v, f32x4);
      std::memcpy(out + i + 4 * w, &narrow, sizeof narrow);
    }
  }
  double total = 0.0;
  bool found = false;
  for (int k = 0; k < 4; ++k) {
    total += sum[0][k] + sum[1][k];
    found = found || subnormal[k] != 0;
  }
  for (; i < n; ++i) {
    const double a = std::abs(in[i]);
    total += a;
    found = found || (a < DBL_MIN && a != 0.0);
    out[i] = static_cast<float>(in[i]);
  }
  return NarrowedRow{total, found};
}

}  // namespace lorm
