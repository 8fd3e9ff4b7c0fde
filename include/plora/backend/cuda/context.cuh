#pragma once
// Execution context of the CUDA backend: one process-wide stream on the current
// device that every op is ordered on (so the memory pool may hand a freed block
// to the next op without further synchronisation), and per-thread cuBLAS /
// cuSOLVER handles bound to it, created on first use.
#include <atomic>
#include <string>

#include "plora/backend/cuda/check.cuh"

namespace plora::detail::cuda {

inline cudaStream_t create_stream() {
  cudaStream_t stream = nullptr;
  PLORA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return stream;
}

/// The backend's stream. Never destroyed: the runtime may already be shut down
/// when static destructors run.
inline cudaStream_t stream() {
  static const cudaStream_t shared = create_stream();
  return shared;
}

/// Library handles of the calling thread (cuBLAS handles must not be used by
/// two threads at once).
class ThreadContext {
 public:
  ThreadContext() = default;
  ThreadContext(const ThreadContext&) = delete;
  ThreadContext& operator=(const ThreadContext&) = delete;
  ~ThreadContext() {
    // Status ignored: at process exit the runtime may be gone already.
    if (blas_ != nullptr) static_cast<void>(cublasDestroy(blas_));
    if (solver_ != nullptr) static_cast<void>(cusolverDnDestroy(solver_));
  }

  cublasHandle_t blas() {
    if (blas_ == nullptr) {
      PLORA_CUDA_CHECK(cublasCreate(&blas_));
      PLORA_CUDA_CHECK(cublasSetStream(blas_, stream()));
    }
    return blas_;
  }
  cusolverDnHandle_t solver() {
    if (solver_ == nullptr) {
      PLORA_CUDA_CHECK(cusolverDnCreate(&solver_));
      PLORA_CUDA_CHECK(cusolverDnSetStream(solver_, stream()));
    }
    return solver_;
  }

 private:
  cublasHandle_t blas_ = nullptr;
  cusolverDnHandle_t solver_ = nullptr;
};

inline ThreadContext& thread_context() {
  thread_local ThreadContext context;
  return context;
}

inline void synchronize() { PLORA_CUDA_CHECK(cudaStreamSynchronize(stream())); }

/// Why no CUDA device can be used, or an empty string when one can.
inline std::string device_unavailable_reason() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    static_cast<void>(cudaGetLastError());
    return plora::detail::concat("cudaGetDeviceCount failed: ", cudaGetErrorString(status));
  }
  if (count == 0) return "cudaGetDeviceCount found no CUDA device";
  return {};
}

}  // namespace plora::detail::cuda
