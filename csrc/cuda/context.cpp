#include "context.h"

#include <unordered_map>

#include "cuda_check.h"

namespace lorm {

cudaStream_t current_stream(int device) {
  void* stream = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(device, &stream));
  return static_cast<cudaStream_t>(stream);
}

int multiprocessor_count(int device) {
  int count = 0;
  LORM_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

// Handles are per thread (a cuBLAS/cuSOLVER handle must not be used by two threads at
// once) and per device, and live as long as the thread: destroying them at process exit
// could run after the CUDA context is gone. `handles` is the caller's thread_local map.
template <typename Handle, typename Create, typename Bind>
Handle bound_handle(std::unordered_map<int, Handle>& handles, int device, const Create& create,
                    const Bind& bind) {
  auto found = handles.find(device);
  if (found == handles.end()) found = handles.emplace(device, create()).first;
  bind(found->second, current_stream(device));
  return found->second;
}

cublasHandle_t blas_handle(int device) {
  thread_local std::unordered_map<int, cublasHandle_t> handles;
  return bound_handle(
      handles, device,
      [] {
        cublasHandle_t handle = nullptr;
        LORM_CUBLAS_CHECK(cublasCreate(&handle));
        return handle;
      },
      [](cublasHandle_t handle, cudaStream_t stream) { LORM_CUBLAS_CHECK(cublasSetStream(handle, stream)); });
}

cusolverDnHandle_t solver_handle(int device) {
  thread_local std::unordered_map<int, cusolverDnHandle_t> handles;
  return bound_handle(
      handles, device,
      [] {
        cusolverDnHandle_t handle = nullptr;
        LORM_CUSOLVER_CHECK(cusolverDnCreate(&handle));
        return handle;
      },
      [](cusolverDnHandle_t handle, cudaStream_t stream) {
        LORM_CUSOLVER_CHECK(cusolverDnSetStream(handle, stream));
      });
}

}  // namespace lorm
