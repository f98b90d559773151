// What the CUDA kernels need from the CUDA context, through the stable ABI: torch's
// current stream, a device guard, the device's SM count, and lorm's own cuBLAS and
// cuSOLVER handles (torch's handle getters are not part of the stable surface).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <torch/csrc/stable/accelerator.h>

#include "../stable.h"

namespace lorm {

using DeviceGuard = torch::stable::accelerator::DeviceGuard;

// t's CUDA device index (hold a DeviceGuard(device_of(t)) while working on t).
inline int device_of(const Tensor& t) { return static_cast<int>(t.get_device_index()); }

// torch's current stream on `device` (what every kernel launch and library call uses).
cudaStream_t current_stream(int device);

// Number of streaming multiprocessors of `device`.
int multiprocessor_count(int device);

// This thread's handle for `device`, created on first use and bound to the current
// stream on every call.
cublasHandle_t blas_handle(int device);
cusolverDnHandle_t solver_handle(int device);

}  // namespace lorm
