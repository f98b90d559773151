// CUDA entry points of gram_update and lowrank_gram_update: pick the custom kernel
// that covers the dtypes and rank, else the blocked ATen path (cuBLAS underneath).
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../checks.h"
#include "../gram_blocked.h"
#include "../rows.h"
#include "launchers.h"

namespace lorm {
namespace {

bool is_half(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

void gram_update_cuda(const at::Tensor& acc, const at::Tensor& x) {
  check_gram_update(acc, x);
  const c10::cuda::CUDAGuard guard(acc.device());
  if (x.numel() == 0) return;
  const bool half_gemm = acc.dim() == 2 && acc.scalar_type() == at::kFloat && is_half(x);
  for_each_row_slice(x, [&](const at::Tensor& s) {
    if (acc.dim() == 1) {
      launch_square_sums(s, acc);
    } else if (half_gemm) {
      gemm_half_gram(s, acc);
    } else {
      add_full_gram_blocked(s, acc);
    }
  });
}

void lowrank_gram_update_cuda(const at::Tensor& acc, const at::Tensor& x, const at::Tensor& a,
                              const std::optional<at::Tensor>& diag_acc) {
  check_lowrank_gram_update(acc, x, a, diag_acc);
  const c10::cuda::CUDAGuard guard(acc.device());
  if (x.numel() == 0) return;
  const bool fused = acc.scalar_type() == at::kFloat && a.size(0) <= kFusedMaxRank &&
                     (!diag_acc.has_value() || diag_acc->scalar_type() == at::kFloat);
  const at::Tensor a_acc = a.to(acc.scalar_type()).contiguous();
  const at::Tensor diag = diag_acc.has_value() ? *diag_acc : at::Tensor();
  for_each_row_slice(x, [&](const at::Tensor& s) {
    if (fused) {
      launch_fused_lowrank(s, a_acc, acc, diag);
    } else {
      add_lowrank_gram_blocked(s, a_acc, acc, diag_acc, &launch_square_sums);
    }
  });
}

}  // namespace
}  // namespace lorm

TORCH_LIBRARY_IMPL(lorm_ext, CUDA, m) {
  m.impl("gram_update", &lorm::gram_update_cuda);
  m.impl("lowrank_gram_update", &lorm::lowrank_gram_update_cuda);
}
