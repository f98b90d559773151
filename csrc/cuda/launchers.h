// Host-side launchers of the CUDA kernels; each takes a 2-D strided row slice
// s (n, d) as produced by for_each_row_slice and accumulates into acc.
#pragma once

#include "../stable.h"

namespace lorm {

// acc (d,) += (s * s).sum(0). acc is float32 or float64.
void launch_square_sums(const Tensor& s, const Tensor& acc);

// acc (r, r) += z.T @ z with z = s @ a.T, and diag_acc (d,) += (s * s).sum(0) when
// given, in one read of s. Needs acc float32, a float32 contiguous (r, d) with
// r <= kFusedMaxRank.
void launch_fused_lowrank(const Tensor& s, const Tensor& a, const Tensor& acc,
                          const std::optional<Tensor>& diag_acc);
constexpr int kFusedMaxRank = 32;

// acc (d, d) += s.T @ s with s float16/bfloat16 and acc float32: one cuBLAS
// GemmEx with float32 accumulation, no up-cast copy of s.
void gemm_half_gram(const Tensor& s, const Tensor& acc);

}  // namespace lorm
