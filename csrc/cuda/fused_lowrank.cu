// The B-step statistic in one read of x: z = x @ a.T, acc (r, r) += z.T @ z and,
// optionally, diag (d,) += (x * x).sum(rows).
//
// One warp per row: lanes stride over the row's columns (coalesced, 16-byte loads
// when the layout allows), convert to float32 in registers (no up-cast copy of x),
// add squares into a block-shared diagonal and accumulate the row's z in registers.
// The block's eight rows of z meet in shared memory and each thread keeps a few
// entries of z.T @ z in registers; everything reaches global memory once per block
// through atomicAdd.
#include <algorithm>

#include "context.h"
#include "cuda_check.h"
#include "launchers.h"
#include "vec_load.cuh"

namespace lorm {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxRank = kFusedMaxRank;
constexpr int kEntriesPerThread = (kMaxRank * kMaxRank + kThreads - 1) / kThreads;
constexpr int kSharedDiagLimitBytes = 40 * 1024;

template <typename scalar_t, int kVec>
__device__ __forceinline__ void load_row_values(const scalar_t* p, float (&out)[kVec]) {
  if constexpr (kVec > 1) {
    const auto packet = load_packed<scalar_t, kVec>(p);
#pragma unroll
    for (int v = 0; v < kVec; ++v) out[v] = static_cast<float>(packet.v[v]);
  } else {
    out[0] = static_cast<float>(p[0]);
  }
}

template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kThreads)
fused_lowrank_kernel(const scalar_t* __restrict__ x, int64_t n, int64_t d, int64_t row_stride,
                     int64_t col_stride, const float* __restrict__ a, int r,
                     int64_t rows_per_block, float* __restrict__ acc,
                     float* __restrict__ diag_out, bool shared_diag) {
  extern __shared__ float shared[];
  float* z_tile = shared;                    // [kWarps][kMaxRank]
  float* diag_tile = shared + kWarps * kMaxRank;  // [d] when shared_diag
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (diag_out != nullptr && shared_diag)
    for (int64_t j = threadIdx.x; j < d; j += kThreads) diag_tile[j] = 0.f;
  float h[kEntriesPerThread] = {};
  __syncthreads();

  const int64_t row_begin = static_cast<int64_t>(blockIdx.x) * rows_per_block;
  const int64_t row_end = min(n, row_begin + rows_per_block);
  for (int64_t base = row_begin; base < row_end; base += kWarps) {
    const int64_t i = base + warp;
    float z[kMaxRank] = {};
    if (i < row_end) {
      const scalar_t* row = x + i * row_stride;
      for (int64_t j = static_cast<int64_t>(lane) * kVec; j < d; j += 32 * kVec) {
        float values[kVec];
        load_row_values<scalar_t, kVec>(row + j * col_stride, values);
        if (diag_out != nullptr) {
          float* target = shared_diag ? diag_tile : diag_out;
#pragma unroll
          for (int v = 0; v < kVec; ++v) atomicAdd(target + j + v, values[v] * values[v]);
        }
#pragma unroll
        for (int k = 0; k < kMaxRank; ++k) {
          if (k < r) {
            const float* a_k = a + k * d + j;
#pragma unroll
            for (int v = 0; v < kVec; ++v) z[k] = fmaf(values[v], a_k[v], z[k]);
          }
        }
      }
    }
    float mine = 0.f;
#pragma unroll
    for (int k = 0; k < kMaxRank; ++k) {
      if (k < r) {
        float total = z[k];
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1)
          total += __shfl_xor_sync(0xffffffffu, total, offset);
        if (lane == k) mine = total;
      }
    }
    if (lane < kMaxRank) z_tile[warp * kMaxRank + lane] = mine;
    __syncthreads();
#pragma unroll
    for (int t = 0; t < kEntriesPerThread; ++t) {
      const int e = threadIdx.x + t * kThreads;
      if (e < r * r) {
        const int k = e / r, l = e % r;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) h[t] += z_tile[w * kMaxRank + k] * z_tile[w * kMaxRank + l];
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int t = 0; t < kEntriesPerThread; ++t) {
    const int e = threadIdx.x + t * kThreads;
    if (e < r * r) atomicAdd(acc + e, h[t]);
  }
  if (diag_out != nullptr && shared_diag)
    for (int64_t j = threadIdx.x; j < d; j += kThreads) atomicAdd(diag_out + j, diag_tile[j]);
}

template <typename scalar_t, int kVec>
void launch(const Tensor& s, const Tensor& a, const Tensor& acc,
            const std::optional<Tensor>& diag_acc) {
  const int64_t n = s.size(0), d = s.size(1);
  const int sms = multiprocessor_count(device_of(acc));
  const int64_t target_blocks = 4LL * sms;
  int64_t rows_per_block = (n + target_blocks - 1) / target_blocks;
  rows_per_block = std::max<int64_t>(4 * kWarps, (rows_per_block + kWarps - 1) / kWarps * kWarps);
  const int64_t blocks = (n + rows_per_block - 1) / rows_per_block;
  const bool with_diag = diag_acc.has_value();
  const bool shared_diag = with_diag && d * sizeof(float) <= kSharedDiagLimitBytes;
  const size_t shared_bytes = (kWarps * kMaxRank + (shared_diag ? d : 0)) * sizeof(float);
  fused_lowrank_kernel<scalar_t, kVec>
      <<<blocks, kThreads, shared_bytes, current_stream(device_of(acc))>>>(
          s.const_data_ptr<scalar_t>(), n, d, s.stride(0), s.stride(1),
          a.const_data_ptr<float>(), static_cast<int>(a.size(0)), rows_per_block,
          acc.mutable_data_ptr<float>(), with_diag ? diag_acc->mutable_data_ptr<float>() : nullptr,
          shared_diag);
  LORM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void launch_fused_lowrank(const Tensor& s, const Tensor& a, const Tensor& acc,
                          const std::optional<Tensor>& diag_acc) {
  LORM_CHECK(acc.scalar_type() == ScalarType::Float && a.scalar_type() == ScalarType::Float &&
                 a.is_contiguous() && a.size(0) <= kMaxRank,
             "lowrank_gram_update: fused CUDA kernel needs float32 acc and a, r <= ", kMaxRank);
  LORM_CHECK(!diag_acc.has_value() || diag_acc->scalar_type() == ScalarType::Float,
             "lowrank_gram_update: fused CUDA kernel needs a float32 diag_acc");
  if (s.size(0) == 0 || s.size(1) == 0) return;
  dispatch_input_float(s.scalar_type(), "fused_lowrank", [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    constexpr int vec = vec_width<scalar_t>();
    if (rows_vectorizable(s, vec)) {
      launch<scalar_t, vec>(s, a, acc, diag_acc);
    } else {
      launch<scalar_t, 1>(s, a, acc, diag_acc);
    }
  });
}

}  // namespace lorm
