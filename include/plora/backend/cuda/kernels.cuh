#pragma once
// Launch helpers and the row-wise kernels of the CUDA backend. Elementwise work
// is a device lambda run over a (rows x cols) index space; row-wise work
// (softmax, layernorm, cross-entropy) runs one block per row with CUB block
// reductions; column reductions run one thread per column and row lane.
#include <cub/block/block_reduce.cuh>
#include <cub/device/device_reduce.cuh>
#include <cuda/functional>
#include <cuda/std/functional>
#include <thrust/iterator/counting_iterator.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "plora/backend/cuda/memory.cuh"

namespace plora::detail::cuda {

inline constexpr int kThreads = 256;

template <class F>
__global__ void for_each_element_kernel(Index rows, Index cols, F f) {
  const Index count = rows * cols;
  const Index step = Index{gridDim.x} * blockDim.x;
  for (Index i = Index{blockIdx.x} * blockDim.x + threadIdx.x; i < count; i += step) f(i / cols, i % cols);
}

/// Runs the device callable f(r, c) for every (r, c) of a (rows x cols) space.
template <class F>
void for_each_element(Index rows, Index cols, F f, const char* what) {
  if (rows <= 0 || cols <= 0) return;
  // Grid-stride loop: 65535 blocks of 256 threads fill any current GPU.
  const Index blocks = std::min<Index>((rows * cols + kThreads - 1) / kThreads, 65535);
  for_each_element_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream()>>>(rows, cols, f);
  PLORA_CUDA_CHECK_LAUNCH(what);
}

/// Block-wide reduction whose result every thread of the block receives.
template <class T, class Reduction>
__device__ T block_reduce(T value, Reduction reduction) {
  using Reduce = cub::BlockReduce<T, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  __shared__ T result;
  const T aggregate = Reduce(temp).Reduce(value, reduction);
  if (threadIdx.x == 0) result = aggregate;
  __syncthreads();
  const T out = result;
  __syncthreads();  // temp and result may be reused by the next call
  return out;
}

__device__ inline float block_sum(float value) { return block_reduce(value, ::cuda::std::plus<float>{}); }
__device__ inline float block_max(float value) { return block_reduce(value, ::cuda::maximum<float>{}); }

/// Launches `kernel` with one block of kThreads per row.
template <class Kernel, class... Args>
void launch_per_row(Index rows, const char* what, Kernel kernel, Args... args) {
  if (rows <= 0) return;
  kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(args...);
  PLORA_CUDA_CHECK_LAUNCH(what);
}

// ---- row-wise kernels (blockIdx.x is the row) --------------------------------

template <int = 0>  // a template, so the header may be in several TUs (nvcc ignores inline on kernels)
__global__ void softmax_rows_kernel(View<Device> x) {
  float* xr = x.data + Index{blockIdx.x} * x.ld;
  float row_max = -INFINITY;
  for (Index c = threadIdx.x; c < x.cols; c += blockDim.x) row_max = fmaxf(row_max, xr[c]);
  row_max = block_max(row_max);
  float sum = 0.0f;
  for (Index c = threadIdx.x; c < x.cols; c += blockDim.x) {
    xr[c] = expf(xr[c] - row_max);
    sum += xr[c];
  }
  const float inv = 1.0f / block_sum(sum);
  for (Index c = threadIdx.x; c < x.cols; c += blockDim.x) xr[c] *= inv;
}

template <int = 0>
__global__ void softmax_rows_backward_kernel(View<Device> dx, ConstView<Device> y, ConstView<Device> dy) {
  const Index r = blockIdx.x;
  const float* yr = y.data + r * y.ld;
  const float* dyr = dy.data + r * dy.ld;
  float dot = 0.0f;
  for (Index c = threadIdx.x; c < dx.cols; c += blockDim.x) dot += dyr[c] * yr[c];
  dot = block_sum(dot);
  for (Index c = threadIdx.x; c < dx.cols; c += blockDim.x) dx.data[r * dx.ld + c] = yr[c] * (dyr[c] - dot);
}

/// dlogits = (softmax(logits) - onehot(label)) / rows; row_loss[r] = -log p[label].
template <int = 0>
__global__ void cross_entropy_kernel(View<Device> dlogits, ConstView<Device> logits,
                                            const std::int32_t* labels, float inv_rows, double* row_loss) {
  const Index r = blockIdx.x;
  const float* xr = logits.data + r * logits.ld;
  float* dr = dlogits.data + r * dlogits.ld;
  float row_max = -INFINITY;
  for (Index c = threadIdx.x; c < logits.cols; c += blockDim.x) row_max = fmaxf(row_max, xr[c]);
  row_max = block_max(row_max);
  float sum = 0.0f;
  for (Index c = threadIdx.x; c < logits.cols; c += blockDim.x) sum += expf(xr[c] - row_max);
  const float inv = 1.0f / block_sum(sum);
  const std::int32_t label = labels[r];
  for (Index c = threadIdx.x; c < logits.cols; c += blockDim.x) {
    const float p = expf(xr[c] - row_max) * inv;
    if (c == label) {
      row_loss[r] = -static_cast<double>(logf(fmaxf(p, 1e-38f)));
      dr[c] = (p - 1.0f) * inv_rows;
    } else {
      dr[c] = p * inv_rows;
    }
  }
}

template <int = 0>
__global__ void layernorm_forward_kernel(View<Device> y, View<Device> stats, ConstView<Device> x,
                                                ConstView<Device> gamma, ConstView<Device> beta, float eps) {
  const Index r = blockIdx.x, n = y.cols;
  const float* xr = x.data + r * x.ld;
  float* yr = y.data + r * y.ld;
  float sum = 0.0f;
  for (Index c = threadIdx.x; c < n; c += blockDim.x) sum += xr[c];
  const float mean = block_sum(sum) / static_cast<float>(n);
  float squares = 0.0f;
  for (Index c = threadIdx.x; c < n; c += blockDim.x) squares += (xr[c] - mean) * (xr[c] - mean);
  const float rstd = 1.0f / sqrtf(block_sum(squares) / static_cast<float>(n) + eps);
  for (Index c = threadIdx.x; c < n; c += blockDim.x) yr[c] = (xr[c] - mean) * rstd * gamma.data[c] + beta.data[c];
  if (threadIdx.x == 0) {
    stats.data[r * stats.ld] = mean;
    stats.data[r * stats.ld + 1] = rstd;
  }
}

template <int = 0>
__global__ void layernorm_backward_kernel(View<Device> dx, ConstView<Device> dy, ConstView<Device> x,
                                                 ConstView<Device> stats, ConstView<Device> gamma) {
  const Index r = blockIdx.x, n = dx.cols;
  const float* xr = x.data + r * x.ld;
  const float* dyr = dy.data + r * dy.ld;
  float* dxr = dx.data + r * dx.ld;
  const float mean = stats.data[r * stats.ld], rstd = stats.data[r * stats.ld + 1];
  float sum_g = 0.0f, sum_g_xhat = 0.0f;
  for (Index c = threadIdx.x; c < n; c += blockDim.x) {
    const float g = dyr[c] * gamma.data[c];
    sum_g += g;
    sum_g_xhat += g * (xr[c] - mean) * rstd;
  }
  sum_g = block_sum(sum_g);
  sum_g_xhat = block_sum(sum_g_xhat);
  const float inv_n = 1.0f / static_cast<float>(n);
  for (Index c = threadIdx.x; c < n; c += blockDim.x) {
    const float xhat = (xr[c] - mean) * rstd;
    dxr[c] = rstd * (dyr[c] * gamma.data[c] - inv_n * (sum_g + xhat * sum_g_xhat));
  }
}

// ---- column reductions ------------------------------------------------------

inline constexpr int kColumnLanes = 32, kRowLanes = 8;

/// out0[c] = beta * out0[c] + sum_r f(r, c).x and likewise out1 with .y
/// (out1 may be null). A block covers 32 columns with 8 row lanes each; the
/// summation order is fixed, so results are deterministic.
template <class F>
__global__ void column_sums_kernel(float* out0, float* out1, float beta, Index rows, Index cols, F f) {
  __shared__ float2 partial[kRowLanes][kColumnLanes];
  const Index c = Index{blockIdx.x} * kColumnLanes + threadIdx.x;
  float2 acc = {0.0f, 0.0f};
  if (c < cols)
    for (Index r = threadIdx.y; r < rows; r += kRowLanes) {
      const float2 term = f(r, c);
      acc.x += term.x;
      acc.y += term.y;
    }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || c >= cols) return;
  for (int lane = 1; lane < kRowLanes; ++lane) {
    acc.x += partial[lane][threadIdx.x].x;
    acc.y += partial[lane][threadIdx.x].y;
  }
  out0[c] = beta * out0[c] + acc.x;
  if (out1 != nullptr) out1[c] = beta * out1[c] + acc.y;
}

template <class F>
void column_sums(float* out0, float* out1, float beta, Index rows, Index cols, F f, const char* what) {
  if (cols <= 0) return;
  const auto blocks = static_cast<unsigned>((cols + kColumnLanes - 1) / kColumnLanes);
  column_sums_kernel<<<blocks, dim3(kColumnLanes, kRowLanes), 0, stream()>>>(out0, out1, beta, rows, cols, f);
  PLORA_CUDA_CHECK_LAUNCH(what);
}

// ---- whole-tensor reductions ------------------------------------------------

/// reduction over i in [0, count) of transform(i), on the device through CUB;
/// waits for the result. `transform` must be a __host__ __device__ callable.
template <class T, class Transform, class Reduction>
T reduce_indices(Index count, Transform transform, Reduction reduction, T init) {
  const DeviceBuffer<T> result(1);
  const thrust::counting_iterator<Index> first(0);
  std::size_t temp_bytes = 0;
  PLORA_CUDA_CHECK(cub::DeviceReduce::TransformReduce(nullptr, temp_bytes, first, result.data(), count, reduction,
                                                      transform, init, stream()));
  // A null buffer would turn the second call into another size query.
  const DeviceBuffer<std::byte> temp(std::max<std::size_t>(temp_bytes, 1));
  PLORA_CUDA_CHECK(cub::DeviceReduce::TransformReduce(temp.data(), temp_bytes, first, result.data(), count, reduction,
                                                      transform, init, stream()));
  T host{};
  PLORA_CUDA_CHECK(cudaMemcpyAsync(&host, result.data(), sizeof(T), cudaMemcpyDeviceToHost, stream()));
  synchronize();
  return host;
}

}  // namespace plora::detail::cuda
