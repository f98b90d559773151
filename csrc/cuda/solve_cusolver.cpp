// CUDA Cholesky for spd_solve through cuSOLVER, on the handle torch holds (bound to
// torch's current stream). Small matrices are factored in one batched call.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "../solve.h"
#include "cuda_check.h"

namespace lorm {
namespace {

constexpr int64_t kBatchedPotrfMaxDim = 128;

int as_int(int64_t v, const char* what) {
  TORCH_CHECK(v <= std::numeric_limits<int>::max(), "spd_solve: ", what, " = ", v,
              " is too large for cuSOLVER");
  return static_cast<int>(v);
}

// Device array of the addresses of each (rows, cols) matrix of a contiguous batch.
at::Tensor matrix_pointers(const at::Tensor& batch) {
  const int64_t count = batch.size(0), stride = batch.stride(0);
  double* base = batch.data_ptr<double>();
  std::vector<int64_t> host(count);
  for (int64_t i = 0; i < count; ++i) host[i] = reinterpret_cast<int64_t>(base + i * stride);
  return at::tensor(host, at::kLong).to(batch.device());
}

// Row-major lower factor == column-major upper factor: cuSOLVER works on the
// transpose, which is the same symmetric matrix, so FILL_MODE_UPPER in column
// major leaves L^T's storage, i.e. a row-major lower L, in place.
constexpr cublasFillMode_t kFill = CUBLAS_FILL_MODE_UPPER;

at::Tensor factor_cuda(const at::Tensor& q) {
  const int64_t count = q.size(0);
  const int d = as_int(q.size(1), "d");
  at::Tensor info = at::zeros({count}, q.options().dtype(at::kInt));
  if (count == 0) return info;
  cusolverDnHandle_t handle = at::cuda::getCurrentCUDASolverDnHandle();
  if (d <= kBatchedPotrfMaxDim && count > 1) {
    const at::Tensor pointers = matrix_pointers(q);
    LORM_CUSOLVER_CHECK(cusolverDnDpotrfBatched(
        handle, kFill, d, reinterpret_cast<double**>(pointers.data_ptr<int64_t>()), d,
        info.data_ptr<int>(), as_int(count, "batch size")));
    return info;
  }
  int work_size = 0;
  LORM_CUSOLVER_CHECK(cusolverDnDpotrf_bufferSize(handle, kFill, d, q.data_ptr<double>(), d,
                                                  &work_size));
  at::Tensor work = at::empty({std::max(work_size, 1)}, q.options());
  for (int64_t i = 0; i < count; ++i) {
    LORM_CUSOLVER_CHECK(cusolverDnDpotrf(handle, kFill, d, q[i].data_ptr<double>(), d,
                                         work.data_ptr<double>(), work_size,
                                         info.data_ptr<int>() + i));
  }
  return info;
}

void solve_cuda(const at::Tensor& factor, const at::Tensor& p) {
  // p (m, d) row-major is p^T (d, m) column-major: potrs solves q X^T = p^T in place.
  const int64_t count = factor.size(0);
  const int d = as_int(factor.size(1), "d");
  const int m = as_int(p.size(1), "m");
  if (count == 0 || m == 0) return;
  cusolverDnHandle_t handle = at::cuda::getCurrentCUDASolverDnHandle();
  at::Tensor info = at::zeros({count}, factor.options().dtype(at::kInt));
  for (int64_t i = 0; i < count; ++i) {
    LORM_CUSOLVER_CHECK(cusolverDnDpotrs(handle, kFill, d, m, factor[i].data_ptr<double>(), d,
                                         p[i].data_ptr<double>(), d, info.data_ptr<int>() + i));
  }
  TORCH_CHECK(info.eq(0).all().item<bool>(), "spd_solve: cusolverDnDpotrs reported an invalid argument");
}

at::Tensor spd_solve_cuda(const at::Tensor& q, const at::Tensor& p) {
  const c10::cuda::CUDAGuard guard(p.device());
  return spd_solve_with(q, p, CholeskyBackend{&factor_cuda, &solve_cuda});
}

}  // namespace
}  // namespace lorm

TORCH_LIBRARY_IMPL(lorm_ext, CUDA, m) { m.impl("spd_solve", &lorm::spd_solve_cuda); }
