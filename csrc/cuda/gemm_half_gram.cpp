// Full Gram of float16/bfloat16 rows into a float32 accumulator with one cuBLAS
// GemmEx (tensor cores, float32 accumulation), reading x in place.
#include <algorithm>
#include <limits>

#include "context.h"
#include "cuda_check.h"
#include "launchers.h"

namespace lorm {

void gemm_half_gram(const Tensor& s_in, const Tensor& acc) {
  LORM_CHECK(acc.scalar_type() == ScalarType::Float, "gram_update: GemmEx path needs a float32 acc");
  const bool half = s_in.scalar_type() == ScalarType::Half;
  LORM_CHECK(half || s_in.scalar_type() == ScalarType::BFloat16,
             "gram_update: GemmEx path needs float16 or bfloat16 rows");
  const int64_t d = s_in.size(1);
  // cuBLAS needs unit column stride and a leading dimension of at least d.
  const bool usable = s_in.stride(1) == 1 && (s_in.size(0) <= 1 || s_in.stride(0) >= d);
  const Tensor s = usable ? s_in : torch::stable::contiguous(s_in);
  const int64_t ld = s.size(0) <= 1 ? std::max<int64_t>(d, 1) : s.stride(0);
  LORM_CHECK(d <= std::numeric_limits<int>::max() && ld <= std::numeric_limits<int>::max(),
             "gram_update: d = ", d, " is too large for cuBLAS");
  const cudaDataType_t type = half ? CUDA_R_16F : CUDA_R_16BF;
  cublasHandle_t handle = blas_handle(device_of(acc));
  const float one = 1.f;
  const int64_t max_rows = std::numeric_limits<int>::max();
  const int64_t elem = static_cast<int64_t>(s.element_size());
  for (int64_t i = 0; i < s.size(0); i += max_rows) {
    const int rows = static_cast<int>(std::min(max_rows, s.size(0) - i));
    const void* block = static_cast<const char*>(s.const_data_ptr()) + i * ld * elem;
    // Column-major view: M = s.T is (d, rows) with leading dimension ld; acc = M M^T.
    LORM_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(d),
                                   static_cast<int>(d), rows, &one, block, type,
                                   static_cast<int>(ld), block, type, static_cast<int>(ld), &one,
                                   acc.mutable_data_ptr<float>(), CUDA_R_32F, static_cast<int>(d),
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
}

}  // namespace lorm
