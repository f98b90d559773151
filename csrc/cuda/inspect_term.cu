// CUDA twin of inspect_terms (csrc/cpu/inspect_cpu.cpp): per term, one grid-stride read
// that finds the largest magnitude, NaNs skipped (atomicMax on the bits of a
// non-negative double, which order like the values), whether every value is finite,
// the smallest diagonal entry (a compare-and-swap loop) and, for a square term,
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

__device__ void atomic_min_double(unsigned long long* address, double value) {
  unsigned long long old = *address;
  while (value < __longlong_as_double(static_cast<long long>(old))) {
    const unsigned long long seen =
        atomicCAS(address, old, static_cast<unsigned long long>(__double_as_longlong(value)));
    if (seen == old) break;
    old = seen;
  }
}

// state: [0] bits of max |t|, [1] non-finite seen, [2] asymmetry seen, [3] bits of the
// smallest diagonal entry (starts at +inf).
template <typename scalar_t>
__global__ void inspect_kernel(const scalar_t* __restrict__ t, int64_t n, int64_t d,
                               bool symmetric, unsigned long long* __restrict__ state) {
  double local_max = 0.0, local_min = __longlong_as_double(0x7ff0000000000000LL);
  bool bad = false, asym = false;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += stride) {
    const scalar_t raw = t[k];
    const double v = static_cast<double>(raw);
    const double a = v < 0 ? -v : v;
    if (!isfinite(v)) bad = true;
    if (a > local_max) local_max = a;  // NaN compares false: skipped
    const int64_t i = k / d, j = k % d;
    if (!symmetric || i == j) {
      if (v < local_min) local_min = v;
    } else if (j > i && !(raw == t[j * d + i])) {
      asym = true;
    }
  }
  if (local_max > 0.0) atomicMax(state, static_cast<unsigned long long>(__double_as_longlong(local_max)));
  if (bad) atomicOr(state + 1, 1ULL);
  if (asym) atomicOr(state + 2, 1ULL);
  atomic_min_double(state + 3, local_min);
}

at::Tensor inspect_one(const at::Tensor& t, bool symmetric) {
  TORCH_CHECK(t.is_cuda(), "inspect_terms: CUDA kernel got a tensor on ", t.device());
  const at::Tensor c = t.contiguous();
  const double inf = std::numeric_limits<double>::infinity();
  at::Tensor state = at::tensor({0.0, 0.0, 0.0, inf}, at::TensorOptions().dtype(at::kDouble))
                         .view(at::kLong).to(c.device());
  const int64_t n = c.numel();
  if (n > 0) {
    const int blocks = static_cast<int>(std::min<int64_t>(kMaxBlocks, (n + kThreads - 1) / kThreads));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.scalar_type(), "inspect_terms", [&] {
      inspect_kernel<scalar_t><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          c.const_data_ptr<scalar_t>(), n, symmetric ? c.size(0) : 1, symmetric,
          reinterpret_cast<unsigned long long*>(state.data_ptr<int64_t>()));
    });
    LORM_CUDA_CHECK(cudaGetLastError());
  }
  const at::Tensor max_abs = state.narrow(0, 0, 1).view(at::kDouble);
  const at::Tensor flags = state.narrow(0, 1, 2).eq(0).to(at::kDouble);
  const at::Tensor min_diagonal = state.narrow(0, 3, 1).view(at::kDouble);
  return at::cat({max_abs, flags, min_diagonal});
}

at::Tensor inspect_terms_cuda(at::TensorList ts, at::IntArrayRef symmetric) {
  check_inspect_terms(ts, symmetric);
  std::vector<at::Tensor> rows;
  rows.reserve(ts.size());
  for (size_t k = 0; k < ts.size(); ++k) rows.push_back(inspect_one(ts[k], symmetric[k] != 0));
  return at::stack(rows);
}

}  // namespace
}  // namespace lorm

TORCH_LIBRARY_IMPL(lorm_ext, CUDA, m) { m.impl("inspect_terms", &lorm::inspect_terms_cuda); }
