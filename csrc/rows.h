// Viewing x (..., d) as 2-D row blocks without copying it.
#pragma once

#include <algorithm>
#include <vector>

#include "stable.h"

namespace lorm {

// Calls fn(s) for 2-D strided views s (n_s, d) that together hold every row of x
// exactly once. Leading dims are merged whenever their strides allow a view, so a
// contiguous or transposed-then-sliced x gives one call; otherwise the outermost
// dim is unrolled. Nothing is copied.
template <typename Fn>
void for_each_row_slice(const Tensor& x, const Fn& fn) {
  if (x.dim() == 1) {
    fn(torch::stable::unsqueeze(x, 0));
    return;
  }
  if (x.dim() == 2) {
    fn(x);
    return;
  }
  if (x.stride(0) == x.stride(1) * x.size(1) || x.size(0) == 1 || x.size(1) == 1) {
    // Dims 0 and 1 merge into one with stride(1): a view, never a copy.
    const IntArrayRef all_sizes = x.sizes();
    std::vector<int64_t> sizes(all_sizes.begin() + 1, all_sizes.end());
    sizes[0] *= x.size(0);
    for_each_row_slice(torch::stable::view(x, sizes), fn);
    return;
  }
  for (int64_t i = 0; i < x.size(0); ++i) for_each_row_slice(torch::stable::select(x, 0, i), fn);
}

// Number of rows of a block such that one block of `d` columns holds about
// `target_bytes` of `elem_bytes`-sized values (at least one row).
inline int64_t rows_per_block(int64_t d, int64_t elem_bytes, int64_t target_bytes = 1 << 24) {
  return std::max<int64_t>(1, target_bytes / std::max<int64_t>(1, d * elem_bytes));
}

}  // namespace lorm
