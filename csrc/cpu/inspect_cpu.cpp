// CPU kernel of inspect_term: one read of a client's term that finds its largest
// magnitude, whether every value is finite and (for a square q) whether it is exactly
// symmetric. The server calls it on every tensor of an update before adding any.
//
// A square term is read in kTile x kTile tile pairs (i-block, j-block) and its mirror
// (j-block, i-block), so the transposed comparison stays in cache.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
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

  void see(double v) {
    const double a = std::abs(v);
    if (a > max_abs) max_abs = a;
    if (!std::isfinite(v)) finite = false;
  }
  void merge(const Findings& o) {
    max_abs = std::max(max_abs, o.max_abs);
    finite = finite && o.finite;
    symmetric = symmetric && o.symmetric;
  }
};

// float for float/half/bfloat16 input, double for double. Eight independent lanes let
// the compiler use packed max/add instructions: a > m ? a : m skips NaNs (MAXPS/MAXPD
// semantics), and z += a * 0 turns NaN the moment a value is Inf or NaN.
template <typename scalar_t>
using compute_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
constexpr int kLanes = 8;

template <typename scalar_t>
Findings inspect_flat(const scalar_t* data, int64_t n) {
  using c_t = compute_t<scalar_t>;
  std::vector<Findings> parts(at::get_num_threads());
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    c_t largest[kLanes] = {}, zero[kLanes] = {};
    int64_t i = begin;
    for (; i + kLanes <= end; i += kLanes) {
#pragma GCC unroll 8
      for (int w = 0; w < kLanes; ++w) {
        const c_t a = std::abs(static_cast<c_t>(data[i + w]));
        largest[w] = a > largest[w] ? a : largest[w];
        zero[w] += a * c_t(0);
      }
    }
    for (; i < end; ++i) {
      const c_t a = std::abs(static_cast<c_t>(data[i]));
      largest[0] = a > largest[0] ? a : largest[0];
      zero[0] += a * c_t(0);
    }
    Findings f;
    for (int w = 0; w < kLanes; ++w) {
      f.max_abs = std::max(f.max_abs, static_cast<double>(largest[w]));
      f.finite = f.finite && zero[w] == c_t(0);
    }
    parts[at::get_thread_num()].merge(f);
  });
  Findings all;
  for (const auto& f : parts) all.merge(f);
  return all;
}

// Every element seen once; every pair (i, j), i < j, compared with (j, i).
template <typename scalar_t>
Findings inspect_square(const scalar_t* data, int64_t d) {
  const int64_t tiles = (d + kTile - 1) / kTile;
  std::vector<Findings> parts(at::get_num_threads());
  at::parallel_for(0, tiles, 1, [&](int64_t b0, int64_t b1) {
    Findings f;
    for (int64_t bi = b0; bi < b1; ++bi) {
      const int64_t i0 = bi * kTile, i1 = std::min(d, i0 + kTile);
      for (int64_t bj = bi; bj < tiles; ++bj) {
        const int64_t j0 = bj * kTile, j1 = std::min(d, j0 + kTile);
        for (int64_t i = i0; i < i1; ++i) {
          for (int64_t j = (bj == bi ? i : j0); j < j1; ++j) {
            const scalar_t upper = data[i * d + j];
            f.see(static_cast<double>(upper));
            if (j == i) continue;
            const scalar_t lower = data[j * d + i];
            f.see(static_cast<double>(lower));
            // Bitwise-equal values are equal; NaNs already fail `finite`.
            if (!(upper == lower)) f.symmetric = false;
          }
        }
      }
    }
    parts[at::get_thread_num()].merge(f);
  });
  Findings all;
  for (const auto& f : parts) all.merge(f);
  return all;
}

at::Tensor inspect_term_cpu(const at::Tensor& t, bool symmetric) {
  check_inspect_term(t, symmetric);
  TORCH_CHECK(t.is_cpu(), "inspect_term: CPU kernel got t on ", t.device());
  const at::Tensor c = t.contiguous();
  Findings found;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.scalar_type(), "inspect_term", [&] {
    const scalar_t* data = c.const_data_ptr<scalar_t>();
    found = symmetric ? inspect_square(data, c.size(0)) : inspect_flat(data, c.numel());
  });
  return at::tensor({found.max_abs, found.finite ? 1.0 : 0.0, found.symmetric ? 1.0 : 0.0},
                    at::TensorOptions().dtype(at::kDouble));
}

}  // namespace
}  // namespace lorm

TORCH_LIBRARY_IMPL(lorm_ext, CPU, m) { m.impl("inspect_term", &lorm::inspect_term_cpu); }
