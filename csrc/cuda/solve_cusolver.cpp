// CUDA Cholesky for spd_solve through cuSOLVER, on lorm's own handle bound to torch's
// current stream. Small matrices are factored in one batched call. float64 only: GPUs
// this targets (H100/H200) factor in float64 fast enough that the mixed-precision path
// of the CPU is not used here.
#include <algorithm>
#include <limits>
#include <vector>

#include "../solve.h"
#include "context.h"
#include "cuda_check.h"

namespace lorm {
namespace {

constexpr int64_t kBatchedPotrfMaxDim = 128;

int as_int(int64_t v, const char* what) {
  LORM_CHECK(v <= std::numeric_limits<int>::max(), "spd_solve: ", what, " = ", v,
             " is too large for cuSOLVER");
  return static_cast<int>(v);
}

double* matrix(const Tensor& batch, int64_t i) { return batch.mutable_data_ptr<double>() + i * batch.stride(0); }

// Device array of the addresses of each matrix of a contiguous batch.
Tensor matrix_pointers(const Tensor& batch) {
  const int64_t count = batch.size(0);
  Tensor host = empty_cpu({count}, ScalarType::Long);
  int64_t* out = host.mutable_data_ptr<int64_t>();
  for (int64_t i = 0; i < count; ++i) out[i] = reinterpret_cast<int64_t>(matrix(batch, i));
  return to_device_of(host, batch);
}

// Row-major lower factor == column-major upper factor: cuSOLVER works on the
// transpose, which is the same symmetric matrix, so FILL_MODE_UPPER in column
// major leaves L^T's storage, i.e. a row-major lower L, in place.
constexpr cublasFillMode_t kFill = CUBLAS_FILL_MODE_UPPER;

// Factors a copy of q_in in place.
std::tuple<Tensor, Tensor> factor_cuda(const Tensor& q_in) {
  const Tensor q = torch::stable::contiguous(torch::stable::clone(q_in));
  const int64_t count = q.size(0);
  const int d = as_int(q.size(1), "d");
  Tensor info = zeros({count}, ScalarType::Int, q);
  if (count == 0) return {q, info};
  cusolverDnHandle_t handle = solver_handle(device_of(q));
  int* status = info.mutable_data_ptr<int>();
  if (d <= kBatchedPotrfMaxDim && count > 1) {
    const Tensor pointers = matrix_pointers(q);
    LORM_CUSOLVER_CHECK(cusolverDnDpotrfBatched(
        handle, kFill, d, reinterpret_cast<double**>(pointers.mutable_data_ptr<int64_t>()), d,
        status, as_int(count, "batch size")));
    return {q, info};
  }
  int work_size = 0;
  LORM_CUSOLVER_CHECK(cusolverDnDpotrf_bufferSize(handle, kFill, d, matrix(q, 0), d, &work_size));
  Tensor work = torch::stable::empty({std::max(work_size, 1)}, ScalarType::Double, std::nullopt, q.device());
  for (int64_t i = 0; i < count; ++i) {
    LORM_CUSOLVER_CHECK(cusolverDnDpotrf(handle, kFill, d, matrix(q, i), d,
                                         work.mutable_data_ptr<double>(), work_size, status + i));
  }
  return {q, info};
}

void solve_cuda(const Tensor& factor, const Tensor& p) {
  // p (m, d) row-major is p^T (d, m) column-major: potrs solves q X^T = p^T in place.
  const int64_t count = factor.size(0);
  const int d = as_int(factor.size(1), "d");
  const int m = as_int(p.size(1), "m");
  if (count == 0 || m == 0) return;
  cusolverDnHandle_t handle = solver_handle(device_of(factor));
  Tensor info = zeros({count}, ScalarType::Int, factor);
  for (int64_t i = 0; i < count; ++i) {
    LORM_CUSOLVER_CHECK(cusolverDnDpotrs(handle, kFill, d, m, matrix(factor, i), d, matrix(p, i), d,
                                         info.mutable_data_ptr<int>() + i));
  }
  LORM_CHECK(item_bool(aten::all(aten::eq(info, scalar_like(info, 0.0)))),
             "spd_solve: cusolverDnDpotrs reported an invalid argument");
}

Tensor spd_solve_cuda(const Tensor& q, const Tensor& p, int64_t mixed_min_dim) {
  LORM_CHECK(p.is_cuda(), "spd_solve: CUDA kernel got p on ", device_name(p));
  const DeviceGuard guard(p.get_device_index());
  return spd_solve_with(q, p, mixed_min_dim,
                        CholeskyBackend{&factor_cuda, &solve_cuda, &flushed_any_device, /*narrowed=*/nullptr});
}

}  // namespace
}  // namespace lorm

STABLE_TORCH_LIBRARY_IMPL(lorm_ext, CUDA, m) { m.impl("spd_solve", TORCH_BOX(&lorm::spd_solve_cuda)); }
