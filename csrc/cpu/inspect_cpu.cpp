// CPU kernel of inspect_terms: one read of each of a client's terms that finds its
// largest magnitude, whether every value is finite, its smallest diagonal entry and
// (for a square q) whether it is exactly symmetric. The server calls it once per update,
// on all of its tensors, before adding any.
//
// A square term is read in kTile x kTile tile pairs (i-block, j-block) and its mirror
// (j-block, i-block), so the transposed comparison stays in cache.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "../checks.h"

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

// A flat term (a p, a bias, or a (d,) diagonal q): every value is a diagonal entry for
// the minimum, which matters only for the diagonal q.
template <typename scalar_t>
Findings inspect_flat(const scalar_t* data, int64_t n) {
  using c_t = compute_t<scalar_t>;
  std::vector<Findings> parts(torch::stable::get_num_threads());
  torch::stable::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
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
    parts[thread_index()].merge(f);
  });
  Findings all;
  for (const auto& f : parts) all.merge(f);
  return all;
}

// A square term: the flat pass for magnitude and finiteness, the diagonal for its
// minimum, then every pair (i, j), i < j, compared with (j, i) in kTile x kTile tile
// pairs so the transposed reads stay in cache.
template <typename scalar_t>
Findings inspect_square(const scalar_t* data, int64_t d) {
  Findings found = inspect_flat(data, d * d);
  found.min_diagonal = std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < d; ++i) found.see_diagonal(static_cast<double>(data[i * d + i]));
  const int64_t tiles = (d + kTile - 1) / kTile;
  std::atomic<bool> symmetric{true};
  torch::stable::parallel_for(0, tiles, 1, [&](int64_t b0, int64_t b1) {
    bool same = true;
    for (int64_t bi = b0; bi < b1 && same; ++bi) {
      const int64_t i0 = bi * kTile, i1 = std::min(d, i0 + kTile);
      for (int64_t bj = bi; bj < tiles && same; ++bj) {
        const int64_t j0 = bj * kTile, j1 = std::min(d, j0 + kTile);
        for (int64_t i = i0; i < i1; ++i) {
          for (int64_t j = std::max(j0, i + 1); j < j1; ++j) {
            same &= data[i * d + j] == data[j * d + i];  // a NaN pair is unequal
          }
        }
      }
    }
    if (!same) symmetric = false;
  });
  found.symmetric = symmetric;
  return found;
}

Findings inspect_one(const Tensor& t, bool symmetric) {
  const Tensor c = torch::stable::contiguous(t);
  Findings found;
  dispatch_input_float(c.scalar_type(), "inspect_terms", [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    const scalar_t* data = c.const_data_ptr<scalar_t>();
    found = symmetric ? inspect_square(data, c.size(0)) : inspect_flat(data, c.numel());
  });
  return found;
}

Tensor inspect_terms_cpu(std::vector<Tensor> ts, std::vector<int64_t> symmetric) {
  check_inspect_terms(ts, symmetric);
  const int64_t n = static_cast<int64_t>(ts.size());
  Tensor out = empty_cpu({n, 4}, ScalarType::Double);
  double* rows = out.mutable_data_ptr<double>();
  int64_t largest = 0;
  for (int64_t k = 0; k < n; ++k) {
    LORM_CHECK(ts[k].is_cpu(), "inspect_terms: CPU kernel got ts[", k, "] on ", device_name(ts[k]));
    largest = std::max(largest, ts[k].numel());
  }
  auto inspect_range = [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const Findings f = inspect_one(ts[k], symmetric[k] != 0);
      double* row = rows + 4 * k;
      row[0] = f.max_abs;
      row[1] = f.finite ? 1.0 : 0.0;
      row[2] = f.symmetric ? 1.0 : 0.0;
      row[3] = f.min_diagonal;
    }
  };
  // Many small terms (a LoRA update: ~100 tensors of a few thousand values): spread the
  // terms over the threads. A large term: one at a time, each read in parallel.
  if (largest < 4 * kGrain) {
    torch::stable::parallel_for(0, n, 1, inspect_range);
  } else {
    inspect_range(0, n);
  }
  return out;
}

}  // namespace
}  // namespace lorm

STABLE_TORCH_LIBRARY_IMPL(lorm_ext, CPU, m) {
  m.impl("inspect_terms", TORCH_BOX(&lorm::inspect_terms_cpu));
}
