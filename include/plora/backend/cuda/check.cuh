#pragma once
// The one error path of the CUDA backend: every CUDA runtime, cuBLAS and
// cuSOLVER call goes through PLORA_CUDA_CHECK, which turns a failed status
// into a plora::Error naming the call, its source location and the library's
// own description of the status.
#if !defined(__CUDACC__)
#error "plora/backend/cuda headers compile only under nvcc (in .cu translation units)"
#endif
#if !defined(__CUDACC_EXTENDED_LAMBDA__)
#error "plora/backend/cuda needs nvcc --extended-lambda (the plora CUDA CMake target adds it)"
#endif

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <type_traits>

#include "plora/core/error.hpp"

namespace plora::detail::cuda {

inline const char* status_text(cudaError_t status) { return cudaGetErrorString(status); }
inline const char* status_text(cublasStatus_t status) { return cublasGetStatusString(status); }
inline const char* status_text(cusolverStatus_t status) {
  switch (status) {
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "cuSOLVER not initialised";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "cuSOLVER could not allocate memory";
    case CUSOLVER_STATUS_INVALID_VALUE: return "invalid argument passed to cuSOLVER";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "device architecture not supported by cuSOLVER";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "cuSOLVER kernel failed to execute";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "cuSOLVER internal error";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "operation not supported by cuSOLVER";
    default: return "cuSOLVER error";
  }
}

inline bool succeeded(cudaError_t status) { return status == cudaSuccess; }
inline bool succeeded(cublasStatus_t status) { return status == CUBLAS_STATUS_SUCCESS; }
inline bool succeeded(cusolverStatus_t status) { return status == CUSOLVER_STATUS_SUCCESS; }

/// Throws a plora::Error naming `call` unless `status` reports success.
template <class Status>
void check_status(Status status, const char* call, const char* file, int line) {
  if (succeeded(status)) return;
  if constexpr (std::is_same_v<Status, cudaError_t>) {
    // Clears a non-sticky error so that the next launch check does not report it again.
    static_cast<void>(cudaGetLastError());
  }
  throw Error(plora::detail::concat("CUDA backend: ", call, " failed at ", file, ":", line, ": ", status_text(status),
                                    " (status ", static_cast<int>(status), ")"));
}

/// Throws a plora::Error naming `op` if the kernel launch just issued failed.
inline void check_launch(const char* op, const char* file, int line) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) check_status(status, plora::detail::concat("kernel launch for ", op).c_str(), file, line);
}

}  // namespace plora::detail::cuda

/// Checks a cudaError_t, cublasStatus_t or cusolverStatus_t result.
#define PLORA_CUDA_CHECK(call) ::plora::detail::cuda::check_status((call), #call, __FILE__, __LINE__)

/// Checks that the kernel launch just issued for op `op` (a C string) was accepted.
#define PLORA_CUDA_CHECK_LAUNCH(op) ::plora::detail::cuda::check_launch((op), __FILE__, __LINE__)
