#include "gram_blocked.h"

#include "rows.h"

namespace lorm {

void add_full_gram_blocked(const at::Tensor& s, const at::Tensor& acc) {
  if (s.scalar_type() == acc.scalar_type()) {
    acc.addmm_(s.t(), s);
    return;
  }
  const int64_t n = s.size(0);
  const int64_t step = rows_per_block(s.size(1), acc.element_size());
  for (int64_t i = 0; i < n; i += step) {
    const at::Tensor block = s.narrow(0, i, std::min(step, n - i)).to(acc.scalar_type());
    acc.addmm_(block.t(), block);
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
