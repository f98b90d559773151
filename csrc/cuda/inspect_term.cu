// CUDA twin of inspect_term (csrc/cpu/inspect_cpu.cpp): one grid-stride read of t that
// finds the largest magnitude, NaNs skipped (atomicMax on the bits of a non-negative double,
// which order like the values), whether every value is finite and, for a square t,
// whether t[i][j] == t[j][i] for every i < j.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <torch/library.h>

#include "../checks.h"
#include "cuda_check.h"

namespace lorm {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;

// state: [0] bits of max |t| (as unsigned long long), [1] non-finite seen, [2] asymmetry seen.
template <typename scalar_t>
__global__ void inspect_kernel(const scalar_t* __restrict__ t, int64_t n, int64_t d,
                               bool symmetric, unsigned long long* __restrict__ state) {
  double local_max = 0.0;
  bool bad = false, asym = false;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += stride) {
    const scalar_t raw = t[k];
    const double v = static_cast<double>(raw);
    const double a = v < 0 ? -v : v;
    if (!isfinite(v)) bad = true;
    if (a > local_max) local_max = a;  // NaN compares false: skipped
    if (symmetric) {
      const int64_t i = k / d, j = k % d;
      if (j > i && !(raw == t[j * d + i])) asym = true;
    }
  }
  if (local_max > 0.0) atomicMax(state, static_cast<unsigned long long>(__double_as_longlong(local_max)));
  if (bad) atomicOr(state + 1, 1ULL);
  if (asym) atomicOr(state + 2, 1ULL);
}

at::Tensor inspect_term_cuda(const at::Tensor& t, bool symmetric) {
  check_inspect_term(t, symmetric);
  TORCH_CHECK(t.is_cuda(), "inspect_term: CUDA kernel got t on ", t.device());
  const at::Tensor c = t.contiguous();
  at::Tensor state = at::zeros({3}, c.options().dtype(at::kLong));
  const int64_t n = c.numel();
  if (n > 0) {
    const int blocks = static_cast<int>(std::min<int64_t>(kMaxBlocks, (n + kThreads - 1) / kThreads));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.scalar_type(), "inspect_term", [&] {
      inspect_kernel<scalar_t><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          c.const_data_ptr<scalar_t>(), n, symmetric ? c.size(0) : 1, symmetric,
          reinterpret_cast<unsigned long long*>(state.data_ptr<int64_t>()));
    });
    LORM_CUDA_CHECK(cudaGetLastError());
  }
  // [max bits reinterpreted as double, finite, symmetric]
  const at::Tensor max_abs = state.narrow(0, 0, 1).view(at::kDouble);
  const at::Tensor flags = state.narrow(0, 1, 2).eq(0).to(at::kDouble);
  return at::cat({max_abs, flags});
}

}  // namespace
}  // namespace lorm

TORCH_LIBRARY_IMPL(lorm_ext, CUDA, m) { m.impl("inspect_term", &lorm::inspect_term_cuda); }
