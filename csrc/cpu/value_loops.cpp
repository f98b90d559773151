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

template <int N>
LORM_INLINE Vec<float, N> magnitude(Vec<float, N> v) {
  return (Vec<float, N>)((Vec<int32_t, N>)v & 0x7fffffff);
}

// Lanes of a where mask is set, else of b, as bit operations.
template <int N>
LORM_INLINE Vec<float, N> select(Vec<int32_t, N> mask, Vec<float, N> a, Vec<float, N> b) {
  return (Vec<float, N>)((mask & (Vec<int32_t, N>)a) | (~mask & (Vec<int32_t, N>)b));
}

// r[0..N) := its transpose (the classic unpack / shuffle / lane-swap network).
LORM_INLINE void transpose(Vec<float, 8> (&r)[8]) {
  using V = Vec<float, 8>;
  using M = Vec<int32_t, 8>;
  V t[8], u[8];
  for (int k = 0; k < 8; k += 2) {
    t[k] = LORM_SHUFFLE(M, r[k], r[k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[k + 1] = LORM_SHUFFLE(M, r[k], r[k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int k = 0; k < 8; k += 4) {
    u[k] = LORM_SHUFFLE(M, t[k], t[k + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    u[k + 1] = LORM_SHUFFLE(M, t[k], t[k + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    u[k + 2] = LORM_SHUFFLE(M, t[k + 1], t[k + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    u[k + 3] = LORM_SHUFFLE(M, t[k + 1], t[k + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int k = 0; k < 4; ++k) {
    r[k] = LORM_SHUFFLE(M, u[k], u[k + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[k + 4] = LORM_SHUFFLE(M, u[k], u[k + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

LORM_INLINE void transpose(Vec<float, 4> (&r)[4]) {
  using M = Vec<int32_t, 4>;
  const Vec<float, 4> t0 = LORM_SHUFFLE(M, r[0], r[1], 0, 4, 1, 5), t1 = LORM_SHUFFLE(M, r[0], r[1], 2, 6, 3, 7);
  const Vec<float, 4> t2 = LORM_SHUFFLE(M, r[2], r[3], 0, 4, 1, 5), t3 = LORM_SHUFFLE(M, r[2], r[3], 2, 6, 3, 7);
  r[0] = LORM_SHUFFLE(M, t0, t2, 0, 1, 4, 5);
  r[1] = LORM_SHUFFLE(M, t0, t2, 2, 3, 6, 7);
  r[2] = LORM_SHUFFLE(M, t1, t3, 0, 1, 4, 5);
  r[3] = LORM_SHUFFLE(M, t1, t3, 2, 3, 6, 7);
}

// All lanes but lane r set: row r of an N x N block on the diagonal, less t[i][i].
template <int N>
LORM_INLINE Vec<int32_t, N> off_diagonal(int r) {
  Vec<int32_t, N> lane;
  for (int k = 0; k < N; ++k) lane[k] = k;
  return lane != r;
}

template <int N>
LORM_INLINE bool any_lane(Vec<int32_t, N> m) {
  int32_t acc = 0;
  for (int k = 0; k < N; ++k) acc |= m[k];
  return acc != 0;
}

// Whether t[i][j] == t[j][i] for i in [i0, i1), j in [j0, d), j > i: the scalar edges.
bool symmetric_scalar(const float* t, int64_t d, int64_t i0, int64_t i1, int64_t j0) {
  bool same = true;
  for (int64_t i = i0; i < i1; ++i)
    for (int64_t j = std::max(j0, i + 1); j < d; ++j) same &= t[i * d + j] == t[j * d + i];
  return same;
}

template <int N>
LORM_INLINE ValueScan scan_body(const float* data, int64_t n) {
  // a > m ? a : m skips NaNs (MAXPS semantics); z += a * 0 turns NaN at the first Inf
  // or NaN. Two accumulators of each keep the adder and comparator pipelines busy.
  using V = Vec<float, N>;
  const V inf = V{} + std::numeric_limits<float>::infinity();
  V largest[2] = {}, smallest[2] = {inf, inf}, zero[2] = {};
  int64_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    for (int w = 0; w < 2; ++w) {
      const V v = load<V>(data + i + N * w), a = magnitude<N>(v);
      largest[w] = select<N>(a > largest[w], a, largest[w]);
      smallest[w] = select<N>(v < smallest[w], v, smallest[w]);
      zero[w] += a * 0.0f;
    }
  }
  float max_abs = 0.0f, min = std::numeric_limits<float>::infinity(), z = 0.0f;
  for (int w = 0; w < 2; ++w) {
    for (int k = 0; k < N; ++k) {
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

template <int N>
LORM_INLINE bool symmetric_rows_body(const float* t, int64_t d, int64_t row0, int64_t row1) {
  using V = Vec<float, N>;
  using M = Vec<int32_t, N>;
  int64_t i0 = row0;
  for (; i0 + N <= row1; i0 += N) {
    M differ = {};
    int64_t j0 = i0;
    for (; j0 + N <= d; j0 += N) {
      V mirror[N];
      for (int r = 0; r < N; ++r) mirror[r] = load<V>(t + (j0 + r) * d + i0);
      transpose(mirror);
      for (int r = 0; r < N; ++r) {
        const M unequal = load<V>(t + (i0 + r) * d + j0) != mirror[r];
        differ |= j0 == i0 ? unequal & off_diagonal<N>(r) : unequal;  // t[i][i] may be NaN
      }
    }
    if (any_lane<N>(differ) || !symmetric_scalar(t, d, i0, i0 + N, j0)) return false;
  }
  return symmetric_scalar(t, d, i0, row1, i0);  // rows past the last whole block
}

LORM_INLINE void add_body(double* __restrict out, const float* __restrict in, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] += static_cast<double>(in[j]);
}

// N doubles per vector; |in[j]| goes to partial sum j % 8 in both builds, and the eight
// are added in one fixed order, so the two builds give the same bits.
template <int N>
LORM_INLINE NarrowedRow narrow_body(const double* __restrict in, float* __restrict out, int64_t n) {
  using V = Vec<double, N>;
  using M = Vec<int64_t, N>;
  constexpr int kVectors = 8 / N;
  const V tiny = V{} + DBL_MIN, zero = {};
  V sum[kVectors] = {};
  M subnormal = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int w = 0; w < kVectors; ++w) {
      const V v = load<V>(in + i + N * w);
      const V a = (V)((M)v & 0x7fffffffffffffffLL);
      sum[w] += a;
      subnormal |= (a < tiny) & (a != zero);
      const Vec<float, N> narrow = __builtin_convertvector(v, Vec<float, N>);
      store(out + i + N * w, narrow);
    }
  }
  double partial[8];
  for (int w = 0; w < kVectors; ++w)
    for (int k = 0; k < N; ++k) partial[N * w + k] = sum[w][k];
  double total = 0.0;
  bool found = false;
  for (int k = 0; k < 4; ++k) total += partial[k] + partial[4 + k];
  for (int k = 0; k < N; ++k) found = found || subnormal[k] != 0;
  for (; i < n; ++i) {
    const double a = std::abs(in[i]);
    total += a;
    found = found || (a < DBL_MIN && a != 0.0);
    out[i] = static_cast<float>(in[i]);
  }
  return NarrowedRow{total, found};
}

}  // namespace

LORM_TWO_ISAS(ValueScan, scan_float32, (const float* data, int64_t n), (data, n), scan_body<8>,
              scan_body<4>)
LORM_TWO_ISAS(bool, symmetric_rows_float32, (const float* t, int64_t d, int64_t row0, int64_t row1),
              (t, d, row0, row1), symmetric_rows_body<8>, symmetric_rows_body<4>)
LORM_TWO_ISAS(void, add_float32_into_float64, (double* out, const float* in, int64_t n), (out, in, n),
              add_body, add_body)
LORM_TWO_ISAS(NarrowedRow, narrow_float64, (const double* in, float* out, int64_t n), (in, out, n),
              narrow_body<4>, narrow_body<2>)

}  // namespace lorm
