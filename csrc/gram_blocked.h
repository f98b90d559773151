// Device-independent Gram paths built from ATen matmuls over blocks of rows.
// Used by the CPU kernels always and by the CUDA kernels for the dtype/rank
// combinations their custom kernels do not cover.
#pragma once

#include <optional>

#include "stable.h"

namespace lorm {

// acc (d,) += (s * s).sum(0) for a 2-D strided slice s (n, d): a device's own kernel.
using SquareSumsFn = void (*)(const Tensor& s, const Tensor& acc);

// acc (d, d) += s.T @ s; at most one block of rows is converted to acc's dtype.
void add_full_gram_blocked(const Tensor& s, const Tensor& acc);

// acc (r, r) += z.T @ z, z = s @ a_acc.T, block by block in acc's dtype
// (a_acc (r, d) already in that dtype); diag_acc (d,) += (s * s).sum(0) from the
// same converted block when given.
void add_lowrank_gram_blocked(const Tensor& s, const Tensor& a_acc, const Tensor& acc,
                              const std::optional<Tensor>& diag_acc, SquareSumsFn square_sums);

}  // namespace lorm
