// CPU kernels of inspect_terms and add_terms: one read of each of a client's terms that
// finds its largest magnitude, whether every value is finite, its smallest diagonal
// entry and (for a square q) whether it is exactly symmetric; add_terms then adds the
// terms into the server's running sums (checked_add.cpp decides whether it may), while
// they are still in cache.
//
// All terms are cut into pieces of about kGrain values, one parallel region for the
// whole update. A square term's symmetry is read in tile pairs (i-block, j-block) and
// its mirror (j-block, i-block), so the transposed comparison stays in cache; a piece
// of it takes rows from both ends of the triangle, so pieces cost alike. float32 terms
// (what clients send) run the vector loops of value_loops.cpp.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "../checked_add.h"
#include "../checks.h"
#include "value_loops.h"

namespace lorm {
namespace {

constexpr int64_t kTile = 32;
constexpr int64_t kGrain = 1 << 15;

struct Findings {
  double max_abs = 0.0;  // NaNs skipped; Inf counts (and clears `finite`)
  bool finite = true;
  bool symmetric = true;
  double min_diagonal = std::numeric_limits<double>::infinity();  // NaNs skipped

  void see(double v) {
    const double a = std::abs(v);
    if (a > max_abs) max_abs = a;
    if (!std::isfinite(v)) finite = false;
  }
  void see_diagonal(double v) {
    if (v < min_diagonal) min_diagonal = v;
  }
  void merge(const Findings& o) {
    max_abs = std::max(max_abs, o.max_abs);
    finite = finite && o.finite;
    symmetric = symmetric && o.symmetric;
    min_diagonal = std::min(min_diagonal, o.min_diagonal);
  }
};

// float for float/half/bfloat16 input, double for double. Eight independent lanes let
// the compiler use packed max/add instructions: a > m ? a : m skips NaNs (MAXPS/MAXPD
// semantics), and z += a * 0 turns NaN the moment a value is Inf or NaN.
template <typename scalar_t>
using compute_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
constexpr int kLanes = 8;

// max |v|, finiteness and min v over data[begin, end) (every value counts as a diagonal
// entry: that matters only for a (d,) diagonal q).
template <typename scalar_t>
Findings inspect_values(const scalar_t* data, int64_t begin, int64_t end) {
  using c_t = compute_t<scalar_t>;
  c_t largest[kLanes] = {}, zero[kLanes] = {}, smallest[kLanes];
  for (int w = 0; w < kLanes; ++w) smallest[w] = std::numeric_limits<c_t>::infinity();
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
#pragma GCC unroll 8
    for (int w = 0; w < kLanes; ++w) {
      const c_t v = static_cast<c_t>(data[i + w]);
      const c_t a = std::abs(v);
      largest[w] = a > largest[w] ? a : largest[w];
      smallest[w] = v < smallest[w] ? v : smallest[w];
      zero[w] += a * c_t(0);
    }
  }
  for (; i < end; ++i) {
    const c_t v = static_cast<c_t>(data[i]);
    const c_t a = std::abs(v);
    largest[0] = a > largest[0] ? a : largest[0];
    smallest[0] = v < smallest[0] ? v : smallest[0];
    zero[0] += a * c_t(0);
  }
  Findings f;
  for (int w = 0; w < kLanes; ++w) {
    f.max_abs = std::max(f.max_abs, static_cast<double>(largest[w]));
    f.min_diagonal = std::min(f.min_diagonal, static_cast<double>(smallest[w]));
    f.finite = f.finite && zero[w] == c_t(0);
  }
  return f;
}

// Whether t[i][j] == t[j][i] for every row i in [i0, i1) and j > i of a (d, d) t,
// compared in kTile x kTile tile pairs so the transposed reads stay in cache.
template <typename scalar_t>
bool symmetric_rows(const scalar_t* data, int64_t d, int64_t i0, int64_t i1) {
  bool same = true;
  for (int64_t r0 = i0; r0 < i1 && same; r0 += kTile) {
    const int64_t r1 = std::min(i1, r0 + kTile);
    for (int64_t j0 = r0; j0 < d && same; j0 += kTile) {
      const int64_t j1 = std::min(d, j0 + kTile);
      for (int64_t i = r0; i < r1; ++i) {
        for (int64_t j = std::max(j0, i + 1); j < j1; ++j) {
          same &= data[i * d + j] == data[j * d + i];  // a NaN pair is unequal
        }
      }
    }
  }
  return same;
}

bool symmetric_rows(const float* data, int64_t d, int64_t i0, int64_t i1) {
  return symmetric_rows_float32(data, d, i0, i1);
}

Findings inspect_values(const float* data, int64_t begin, int64_t end) {
  const ValueScan scan = scan_float32(data + begin, end - begin);
  Findings f;
  f.max_abs = scan.max_abs;
  f.finite = scan.finite;
  f.min_diagonal = scan.min;
  return f;
}

// One unit of parallel work on term `term`: values [begin, end) (a flat pass or an
// add), or for its symmetry check the rows [begin, end) and [begin2, end2).
struct Piece {
  int64_t term, begin, end;
  bool symmetry = false;
  int64_t begin2 = 0, end2 = 0;
};

// Every term cut into pieces of about kGrain values, so many small terms and one
// large one spread over the threads alike.
std::vector<Piece> value_pieces(const std::vector<Tensor>& ts) {
  std::vector<Piece> pieces;
  for (int64_t k = 0; k < static_cast<int64_t>(ts.size()); ++k)
    for (int64_t b = 0; b < ts[k].numel(); b += kGrain)
      pieces.push_back({k, b, std::min(ts[k].numel(), b + kGrain)});
  return pieces;
}

// The upper triangle of square term k in pieces of about kGrain comparisons: tile rows
// [b0, b1) from the top, where rows are longest, with their mirror from the bottom.
void add_symmetry_pieces(std::vector<Piece>& pieces, int64_t k, int64_t d) {
  const int64_t tiles = (d + kTile - 1) / kTile, top = (tiles + 1) / 2;
  const int64_t step = std::max<int64_t>(1, kGrain / ((tiles + 1) * kTile * kTile));
  for (int64_t b0 = 0; b0 < top; b0 += step) {
    const int64_t b1 = std::min(top, b0 + step);
    const int64_t m0 = std::max(top, tiles - b1), m1 = tiles - b0;  // the mirrored rows
    pieces.push_back({k, b0 * kTile, std::min(d, b1 * kTile), true,
                      std::min(d, m0 * kTile), std::min(d, std::max(m0, m1) * kTile)});
  }
}

// a and b merged in proportion, so each thread's static share of a parallel_for over
// the result gets the same mix of both kinds of work.
std::vector<Piece> interleaved(const std::vector<Piece>& a, const std::vector<Piece>& b) {
  std::vector<Piece> out;
  out.reserve(a.size() + b.size());
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    const bool take_a = j == b.size() || (i < a.size() && i * b.size() <= j * a.size());
    out.push_back(take_a ? a[i++] : b[j++]);
  }
  return out;
}

// out[j] += in[j] for j in [0, n), each value converted to the sum's dtype as it is read.
template <typename acc_t, typename scalar_t>
void add_values(acc_t* out, const scalar_t* in, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] += static_cast<acc_t>(static_cast<compute_t<acc_t>>(in[j]));
}

void add_values(double* out, const float* in, int64_t n) { add_float32_into_float64(out, in, n); }

template <typename Fn>
void dispatch_term(const Tensor& t, const Fn& fn) {
  dispatch_input_float(t.scalar_type(), "inspect_terms", [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    fn(t.const_data_ptr<scalar_t>());
  });
}

// (n, 4) float64 findings of contiguous CPU terms, all terms' pieces in one parallel
// region: [max |t| (NaNs skipped), all finite, exactly symmetric, smallest diagonal].
Tensor inspect_contiguous(const std::vector<Tensor>& ts, const std::vector<int64_t>& symmetric) {
  const int64_t n = static_cast<int64_t>(ts.size());
  std::vector<Piece> symmetry;
  for (int64_t k = 0; k < n; ++k)
    if (symmetric[k]) add_symmetry_pieces(symmetry, k, ts[k].size(0));
  const std::vector<Piece> pieces = interleaved(value_pieces(ts), symmetry);
  std::vector<Findings> found(pieces.size());
  torch::stable::parallel_for(0, static_cast<int64_t>(pieces.size()), 1, [&](int64_t p0, int64_t p1) {
    for (int64_t i = p0; i < p1; ++i) {
      const Piece& piece = pieces[i];
      dispatch_term(ts[piece.term], [&](const auto* data) {
        if (piece.symmetry) {
          const int64_t d = ts[piece.term].size(0);
          found[i].symmetric = symmetric_rows(data, d, piece.begin, piece.end) &&
                               symmetric_rows(data, d, piece.begin2, piece.end2);
        } else {
          found[i] = inspect_values(data, piece.begin, piece.end);
        }
      });
    }
  });
  std::vector<Findings> per_term(n);
  for (size_t i = 0; i < pieces.size(); ++i) per_term[pieces[i].term].merge(found[i]);
  Tensor out = empty_cpu({n, 4}, ScalarType::Double);
  double* rows = out.mutable_data_ptr<double>();
  for (int64_t k = 0; k < n; ++k) {
    Findings& f = per_term[k];
    if (symmetric[k]) {  // the minimum over the diagonal only
      f.min_diagonal = std::numeric_limits<double>::infinity();
      const int64_t d = ts[k].size(0);
      dispatch_term(ts[k], [&](const auto* data) {
        for (int64_t i = 0; i < d; ++i) f.see_diagonal(static_cast<double>(data[i * d + i]));
      });
    }
    double* row = rows + 4 * k;
    row[0] = f.max_abs;
    row[1] = f.finite ? 1.0 : 0.0;
    row[2] = f.symmetric ? 1.0 : 0.0;
    row[3] = f.min_diagonal;
  }
  return out;
}

std::vector<Tensor> contiguous_terms(const std::vector<Tensor>& ts, const char* op) {
  std::vector<Tensor> out;
  out.reserve(ts.size());
  for (size_t k = 0; k < ts.size(); ++k) {
    LORM_CHECK(ts[k].is_cpu(), op, ": CPU kernel got ts[", k, "] on ", device_name(ts[k]));
    out.push_back(ts[k].is_contiguous() ? ts[k] : torch::stable::contiguous(ts[k]));  // a call costs ~2 us
  }
  return out;
}

Tensor inspect_terms_cpu(std::vector<Tensor> ts, std::vector<int64_t> symmetric) {
  check_inspect_terms(ts, symmetric);
  return inspect_contiguous(contiguous_terms(ts, "inspect_terms"), symmetric);
}

// sums[k] += ts[k] for contiguous CPU tensors of equal shapes, every term's pieces in
// one parallel region; each value converted to the sum's dtype as it is read.
void add_contiguous(const std::vector<Tensor>& sums, const std::vector<Tensor>& ts) {
  const std::vector<Piece> pieces = value_pieces(ts);
  torch::stable::parallel_for(0, static_cast<int64_t>(pieces.size()), 1, [&](int64_t p0, int64_t p1) {
    for (int64_t i = p0; i < p1; ++i) {
      const Piece& piece = pieces[i];
      dispatch_term(ts[piece.term], [&](const auto* data) {
        dispatch_acc_float(sums[piece.term].scalar_type(), "add_terms", [&](auto acc_tag) {
          using acc_t = typename decltype(acc_tag)::type;
          acc_t* out = sums[piece.term].template mutable_data_ptr<acc_t>();
          add_values(out + piece.begin, data + piece.begin, piece.end - piece.begin);
        });
      });
    }
  });
}

Tensor add_terms_cpu(std::vector<Tensor> sums, std::vector<Tensor> ts, std::vector<int64_t> kinds,
                     std::vector<double> limits, double negative_rtol, std::vector<Tensor> probes) {
  const std::vector<Tensor> terms = contiguous_terms(ts, "add_terms");
  return add_terms_with(sums, terms, kinds, limits, negative_rtol, probes,
                        TermKernels{&inspect_contiguous, &add_contiguous});
}

}  // namespace
}  // namespace lorm

STABLE_TORCH_LIBRARY_IMPL(lorm_ext, CPU, m) {
  m.impl("inspect_terms", TORCH_BOX(&lorm::inspect_terms_cpu));
  m.impl("add_terms", TORCH_BOX(&lorm::add_terms_cpu));
}
