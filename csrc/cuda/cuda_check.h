// Status checks for CUDA, cuBLAS and cuSOLVER calls: every failure raises with the
// name of the call that failed.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include "../stable.h"

#define LORM_CUDA_CHECK(call)                                                         \
  do {                                                                                \
    const cudaError_t lorm_status = (call);                                           \
    LORM_CHECK(lorm_status == cudaSuccess, #call " failed: ", cudaGetErrorString(lorm_status)); \
  } while (0)

#define LORM_CUBLAS_CHECK(call)                                                       \
  do {                                                                                \
    const cublasStatus_t lorm_status = (call);                                        \
    LORM_CHECK(lorm_status == CUBLAS_STATUS_SUCCESS, #call " failed with cuBLAS status ", \
               static_cast<int>(lorm_status));                                        \
  } while (0)

#define LORM_CUSOLVER_CHECK(call)                                                     \
  do {                                                                                \
    const cusolverStatus_t lorm_status = (call);                                      \
    LORM_CHECK(lorm_status == CUSOLVER_STATUS_SUCCESS, #call " failed with cuSOLVER status ", \
               static_cast<int>(lorm_status));                                        \
  } while (0)
