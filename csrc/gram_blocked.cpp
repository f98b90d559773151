#include "gram_blocked.h"

#include "rows.h"

namespace lorm {
namespace {

constexpr int64_t kSymmetricTile = 256;

// acc += s.T @ s for s in acc's dtype. The product is symmetric, so only the strips
// of tiles on and right of the diagonal are multiplied (about half the flops for
// large d); each strip's transpose is added below the diagonal. Measured 1.4x
// (d = 768) and 1.5x (d = 3072) faster than one full GEMM on CPU.
void add_symmetric_gram(const at::Tensor& s, const at::Tensor& acc) {
  const int64_t d = s.size(1);
  if (d < 2 * kSymmetricTile) {
    acc.addmm_(s.t(), s);
    return;
  }
  for (int64_t i0 = 0; i0 < d; i0 += kSymmetricTile) {
    const int64_t tile = std::min(kSymmetricTile, d - i0), rest = d - i0;
    const at::Tensor strip = at::mm(s.narrow(1, i0, tile).t(), s.narrow(1, i0, rest));
    acc.narrow(0, i0, tile).narrow(1, i0, rest).add_(strip);
    if (rest > tile)
      acc.narrow(0, i0 + tile, rest - tile).narrow(1, i0, tile).add_(strip.narrow(1, tile, rest - tile).t());
  }
}

}  // namespace

void add_full_gram_blocked(const at::Tensor& s, const at::Tensor& acc) {
  if (s.scalar_type() == acc.scalar_type()) {
    add_symmetric_gram(s, acc);
    return;
  }
  const int64_t n = s.size(0);
  const int64_t step = rows_per_block(s.size(1), acc.element_size());
  for (int64_t i = 0; i < n; i += step) {
    add_symmetric_gram(s.narrow(0, i, std::min(step, n - i)).to(acc.scalar_type()), acc);
  }
}

void add_lowrank_gram_blocked(const at::Tensor& s, const at::Tensor& a_acc,
                              const at::Tensor& acc, const std::optional<at::Tensor>& diag_acc,
                              SquareSumsFn square_sums) {
  const int64_t n = s.size(0);
  const int64_t step = rows_per_block(s.size(1), acc.element_size());
  for (int64_t i = 0; i < n; i += step) {
    const at::Tensor block = s.narrow(0, i, std::min(step, n - i)).to(acc.scalar_type());
    const at::Tensor z = at::mm(block, a_acc.t());  // (rows, r)
    acc.addmm_(z.t(), z);
    if (diag_acc.has_value()) square_sums(block, *diag_acc);
  }
}

}  // namespace lorm
