// CUDA twin of inspect_terms (csrc/cpu/inspect_cpu.cpp): per term, one grid-stride read
// that finds the largest magnitude, NaNs skipped (atomicMax on the bits of a
// non-negative double, which order like the values), whether every value is finite,
// the smallest diagonal entry (a compare-and-swap loop) and, for a square term,
// whether t[i][j] == t[j][i] for every i < j.
#include <algorithm>
#include <vector>

#include "../checked_add.h"
#include "../checks.h"
#include "context.h"
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

// Every row of state starts as [0, 0, 0, bits of +inf].
__global__ void init_state_kernel(unsigned long long* state, int64_t n) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= n) return;
  state[4 * k] = state[4 * k + 1] = state[4 * k + 2] = 0ULL;
  state[4 * k + 3] = 0x7ff0000000000000ULL;
}

// out row k = [max |t|, all finite, exactly symmetric, smallest diagonal entry].
__global__ void finish_kernel(const unsigned long long* state, int64_t n, double* out) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= n) return;
  out[4 * k] = __longlong_as_double(static_cast<long long>(state[4 * k]));
  out[4 * k + 1] = state[4 * k + 1] == 0 ? 1.0 : 0.0;
  out[4 * k + 2] = state[4 * k + 2] == 0 ? 1.0 : 0.0;
  out[4 * k + 3] = __longlong_as_double(static_cast<long long>(state[4 * k + 3]));
}

int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

void inspect_one(const Tensor& t, bool symmetric, unsigned long long* state, cudaStream_t stream) {
  LORM_CHECK(t.is_cuda(), "inspect_terms: CUDA kernel got a tensor on ", device_name(t));
  const Tensor c = torch::stable::contiguous(t);
  const int64_t n = c.numel();
  if (n == 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>(kMaxBlocks, blocks_for(n)));
  dispatch_input_float(c.scalar_type(), "inspect_terms", [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    inspect_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
        c.const_data_ptr<scalar_t>(), n, symmetric ? c.size(0) : 1, symmetric, state);
  });
  LORM_CUDA_CHECK(cudaGetLastError());
}

Tensor inspect_cuda(const std::vector<Tensor>& ts, const std::vector<int64_t>& symmetric) {
  LORM_CHECK(!ts.empty(), "inspect_terms: the CUDA kernel needs at least one tensor");
  const DeviceGuard guard(ts[0].get_device_index());
  const cudaStream_t stream = current_stream(device_of(ts[0]));
  const int64_t n = static_cast<int64_t>(ts.size());
  const Tensor state = torch::stable::empty({n, 4}, ScalarType::Long, std::nullopt, ts[0].device());
  auto* bits = reinterpret_cast<unsigned long long*>(state.mutable_data_ptr<int64_t>());
  init_state_kernel<<<blocks_for(n), kThreads, 0, stream>>>(bits, n);
  LORM_CUDA_CHECK(cudaGetLastError());
  for (int64_t k = 0; k < n; ++k) inspect_one(ts[k], symmetric[k] != 0, bits + 4 * k, stream);
  const Tensor out = torch::stable::empty({n, 4}, ScalarType::Double, std::nullopt, ts[0].device());
  finish_kernel<<<blocks_for(n), kThreads, 0, stream>>>(bits, n, out.mutable_data_ptr<double>());
  LORM_CUDA_CHECK(cudaGetLastError());
  return out;
}

Tensor inspect_terms_cuda(std::vector<Tensor> ts, std::vector<int64_t> symmetric) {
  check_inspect_terms(ts, symmetric);
  return inspect_cuda(ts, symmetric);
}

void add_cuda(const std::vector<Tensor>& sums, const std::vector<Tensor>& ts) {
  for (size_t k = 0; k < ts.size(); ++k) add_into(sums[k], ts[k]);
}

Tensor add_terms_cuda(std::vector<Tensor> sums, std::vector<Tensor> ts, std::vector<int64_t> kinds,
                      std::vector<double> limits, double negative_rtol, std::vector<Tensor> probes) {
  LORM_CHECK(!ts.empty(), "add_terms: the CUDA kernel needs at least one tensor");
  const DeviceGuard guard(ts[0].get_device_index());
  return add_terms_with(sums, ts, kinds, limits, negative_rtol, probes, TermKernels{&inspect_cuda, &add_cuda});
}

}  // namespace
}  // namespace lorm

STABLE_TORCH_LIBRARY_IMPL(lorm_ext, CUDA, m) {
  m.impl("inspect_terms", TORCH_BOX(&lorm::inspect_terms_cuda));
  m.impl("add_terms", TORCH_BOX(&lorm::add_terms_cuda));
}
