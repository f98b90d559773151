// acc (d,) += (s * s).sum(0) for a strided row slice s (n, d).
//
// Each thread owns kVec adjacent columns and walks a chunk of rows, so a warp reads
// whole rows coalesced (16-byte loads when the layout allows); partial sums stay in
// registers in the accumulator's precision and reach acc with one atomicAdd per
// column per chunk.
#include <algorithm>

#include "context.h"
#include "cuda_check.h"
#include "launchers.h"
#include "vec_load.cuh"

namespace lorm {
namespace {

constexpr int kThreads = 128;
constexpr int64_t kMaxRowsPerChunk = 256;

template <typename scalar_t, typename acc_t, int kVec>
__global__ void square_sums_kernel(const scalar_t* __restrict__ x, int64_t n, int64_t d,
                                   int64_t row_stride, int64_t col_stride,
                                   int64_t rows_per_chunk, acc_t* __restrict__ out) {
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kVec;
  if (col >= d) return;
  const int64_t row_begin = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t row_end = min(n, row_begin + rows_per_chunk);
  acc_t sums[kVec] = {};
  for (int64_t i = row_begin; i < row_end; ++i) {
    const scalar_t* p = x + i * row_stride + col * col_stride;
    if constexpr (kVec > 1) {
      const auto packet = load_packed<scalar_t, kVec>(p);
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        const acc_t value = static_cast<acc_t>(static_cast<float>(packet.v[v]));
        sums[v] += value * value;
      }
    } else {
      const acc_t value = static_cast<acc_t>(static_cast<float>(*p));
      sums[0] += value * value;
    }
  }
#pragma unroll
  for (int v = 0; v < kVec; ++v) atomicAdd(out + col + v, sums[v]);
}

template <typename scalar_t, typename acc_t, int kVec>
void launch(const Tensor& s, const Tensor& acc) {
  const int64_t n = s.size(0), d = s.size(1);
  const int64_t chunks = (n + kMaxRowsPerChunk - 1) / kMaxRowsPerChunk;
  const int64_t rows_per_chunk = (n + chunks - 1) / chunks;
  const dim3 grid((d / kVec + kThreads - 1) / kThreads, chunks);
  square_sums_kernel<scalar_t, acc_t, kVec>
      <<<grid, kThreads, 0, current_stream(device_of(acc))>>>(
          s.const_data_ptr<scalar_t>(), n, d, s.stride(0), s.stride(1), rows_per_chunk,
          acc.mutable_data_ptr<acc_t>());
  LORM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void launch_square_sums(const Tensor& s, const Tensor& acc) {
  if (s.size(0) == 0 || s.size(1) == 0) return;
  // gridDim.y is capped at 65535: split very tall slices.
  const int64_t max_rows = kMaxRowsPerChunk * 65535;
  if (s.size(0) > max_rows) {
    for (int64_t i = 0; i < s.size(0); i += max_rows)
      launch_square_sums(narrow(s, 0, i, std::min(max_rows, s.size(0) - i)), acc);
    return;
  }
  dispatch_input_float(s.scalar_type(), "square_sums", [&](auto x_tag) {
    using x_t = typename decltype(x_tag)::type;
    constexpr int vec = vec_width<x_t>();
    const bool vectorized = rows_vectorizable(s, vec);
    dispatch_acc_float(acc.scalar_type(), "square_sums", [&](auto acc_tag) {
      using acc_t = typename decltype(acc_tag)::type;
      if (vectorized) {
        launch<x_t, acc_t, vec>(s, acc);
      } else {
        launch<x_t, acc_t, 1>(s, acc);
      }
    });
  });
}

}  // namespace lorm
