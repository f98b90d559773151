// CPU kernels of gram_update and lowrank_gram_update.
//
// The diagonal kernel reads x in place with its own strides and sums squares in
// float64 per column chunk; the full and low-rank paths go through BLAS one block of
// rows at a time (gram_blocked.cpp), so no temporary grows with the number of rows.
#include <algorithm>
#include <vector>

#include "../checks.h"
#include "../gram_blocked.h"
#include "../rows.h"
#include "lowrank_rows.h"

namespace lorm {
namespace {

constexpr int64_t kColumnGrain = 256;
constexpr int64_t kRowsPerPiece = 128;
constexpr int64_t kMaxPieces = 64;

// out[j] += sum_i s[i, j]^2 for a 2-D strided view s (n, d).
template <typename scalar_t, typename acc_t>
void add_square_sums_typed(const Tensor& s, acc_t* out) {
  const int64_t n = s.size(0), d = s.size(1);
  const int64_t rs = s.stride(0), cs = s.stride(1);
  const scalar_t* base = s.const_data_ptr<scalar_t>();
  torch::stable::parallel_for(0, d, kColumnGrain, [&](int64_t j0, int64_t j1) {
    std::vector<double> sums(j1 - j0, 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const scalar_t* row = base + i * rs;
      if (cs == 1) {
        for (int64_t j = j0; j < j1; ++j) {
          const double v = static_cast<double>(static_cast<float>(row[j]));
          sums[j - j0] += v * v;
        }
      } else {
        for (int64_t j = j0; j < j1; ++j) {
          const double v = static_cast<double>(static_cast<float>(row[j * cs]));
          sums[j - j0] += v * v;
        }
      }
    }
    for (int64_t j = j0; j < j1; ++j) out[j] += static_cast<acc_t>(sums[j - j0]);
  });
}

void add_square_sums(const Tensor& s, const Tensor& acc) {
  dispatch_input_float(s.scalar_type(), "square_sums", [&](auto x_tag) {
    using x_t = typename decltype(x_tag)::type;
    dispatch_acc_float(acc.scalar_type(), "square_sums", [&](auto acc_tag) {
      using acc_t = typename decltype(acc_tag)::type;
      add_square_sums_typed<x_t, acc_t>(s, acc.mutable_data_ptr<acc_t>());
    });
  });
}

// out (m values, float32 or float64) += the sum of the `pieces` consecutive partials in
// `partial` (pieces * m), added in order.
void add_piece_sums(const std::vector<double>& partial, int64_t pieces, const Tensor& out) {
  const int64_t m = out.numel();
  std::vector<double> total(partial.begin(), partial.begin() + m);
  for (int64_t p = 1; p < pieces; ++p)
    for (int64_t j = 0; j < m; ++j) total[j] += partial[p * m + j];
  dispatch_acc_float(out.scalar_type(), "lowrank_gram_update", [&](auto acc_tag) {
    using acc_t = typename decltype(acc_tag)::type;
    acc_t* data = out.mutable_data_ptr<acc_t>();
    for (int64_t j = 0; j < m; ++j) data[j] += static_cast<acc_t>(total[j]);
  });
}

void gram_update_cpu(const Tensor& acc, const Tensor& x) {
  check_gram_update(acc, x);
  LORM_CHECK(acc.is_cpu(), "gram_update: CPU kernel got acc on ", device_name(acc));
  if (x.numel() == 0) return;
  for_each_row_slice(x, [&](const Tensor& s) {
    if (acc.dim() == 1) {
      add_square_sums(s, acc);
    } else {
      add_full_gram_blocked(s, acc);
    }
  });
}

// s (n, d) float32 with unit column stride: every statistic in one read of the rows
// (lowrank_rows.cpp). Rows are cut into a fixed number of pieces with their own
// partial sums, added in piece order: the result does not depend on the thread count.
void add_lowrank_fused(const Tensor& s, const Tensor& a, const Tensor& acc, const std::optional<Tensor>& diag_acc) {
  const int64_t n = s.size(0), d = s.size(1), r = a.size(0);
  const Tensor a64 = torch::stable::contiguous(to_dtype(a, ScalarType::Double));
  const int64_t pieces = std::clamp<int64_t>(n / kRowsPerPiece, 1, kMaxPieces);
  const bool with_diag = diag_acc.has_value();
  std::vector<double> zz(pieces * r * r, 0.0), diag(with_diag ? pieces * d : 0, 0.0);
  const float* x = s.const_data_ptr<float>();
  const double* a_data = a64.const_data_ptr<double>();
  torch::stable::parallel_for(0, pieces, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t i0 = n * p / pieces, i1 = n * (p + 1) / pieces;
      lowrank_rows_float32(x + i0 * s.stride(0), s.stride(0), i1 - i0, d, a_data, r, zz.data() + p * r * r,
                           with_diag ? diag.data() + p * d : nullptr);
    }
  });
  add_piece_sums(zz, pieces, acc);
  if (with_diag) add_piece_sums(diag, pieces, *diag_acc);
}

void lowrank_gram_update_cpu(const Tensor& acc, const Tensor& x, const Tensor& a,
                             const std::optional<Tensor>& diag_acc) {
  check_lowrank_gram_update(acc, x, a, diag_acc);
  LORM_CHECK(acc.is_cpu(), "lowrank_gram_update: CPU kernel got acc on ", device_name(acc));
  if (x.numel() == 0) return;
  const Tensor a_acc = torch::stable::contiguous(to_dtype(a, acc.scalar_type()));
  for_each_row_slice(x, [&](const Tensor& s) {
    if (s.scalar_type() == ScalarType::Float && s.stride(1) == 1) {
      add_lowrank_fused(s, a, acc, diag_acc);
    } else {
      add_lowrank_gram_blocked(s, a_acc, acc, diag_acc, &add_square_sums);
    }
  });
}

}  // namespace
}  // namespace lorm

STABLE_TORCH_LIBRARY_IMPL(lorm_ext, CPU, m) {
  m.impl("gram_update", TORCH_BOX(&lorm::gram_update_cpu));
  m.impl("lowrank_gram_update", TORCH_BOX(&lorm::lowrank_gram_update_cpu));
}
