// CUDA entry points of gram_update and lowrank_gram_update: pick the custom kernel
// that covers the dtypes and rank, else the blocked ATen path (cuBLAS underneath).
#include "../checks.h"
#include "../gram_blocked.h"
#include "../rows.h"
#include "context.h"
#include "launchers.h"

namespace lorm {
namespace {

bool is_half(const Tensor& t) {
  return t.scalar_type() == ScalarType::Half || t.scalar_type() == ScalarType::BFloat16;
}

void gram_update_cuda(const Tensor& acc, const Tensor& x) {
  check_gram_update(acc, x);
  LORM_CHECK(acc.is_cuda(), "gram_update: CUDA kernel got acc on ", device_name(acc));
  const DeviceGuard guard(acc.get_device_index());
  if (x.numel() == 0) return;
  const bool half_gemm = acc.dim() == 2 && acc.scalar_type() == ScalarType::Float && is_half(x);
  for_each_row_slice(x, [&](const Tensor& s) {
    if (acc.dim() == 1) {
      launch_square_sums(s, acc);
    } else if (half_gemm) {
      gemm_half_gram(s, acc);
    } else {
      add_full_gram_blocked(s, acc);
    }
  });
}

void lowrank_gram_update_cuda(const Tensor& acc, const Tensor& x, const Tensor& a,
                              const std::optional<Tensor>& diag_acc) {
  check_lowrank_gram_update(acc, x, a, diag_acc);
  LORM_CHECK(acc.is_cuda(), "lowrank_gram_update: CUDA kernel got acc on ", device_name(acc));
  const DeviceGuard guard(acc.get_device_index());
  if (x.numel() == 0) return;
  const bool fused = acc.scalar_type() == ScalarType::Float && a.size(0) <= kFusedMaxRank &&
                     (!diag_acc.has_value() || diag_acc->scalar_type() == ScalarType::Float);
  const Tensor a_acc = torch::stable::contiguous(to_dtype(a, acc.scalar_type()));
  for_each_row_slice(x, [&](const Tensor& s) {
    if (fused) {
      launch_fused_lowrank(s, a_acc, acc, diag_acc);
    } else {
      add_lowrank_gram_blocked(s, a_acc, acc, diag_acc, &launch_square_sums);
    }
  });
}

}  // namespace
}  // namespace lorm

STABLE_TORCH_LIBRARY_IMPL(lorm_ext, CUDA, m) {
  m.impl("gram_update", TORCH_BOX(&lorm::gram_update_cuda));
  m.impl("lowrank_gram_update", TORCH_BOX(&lorm::lowrank_gram_update_cuda));
}
