#pragma once
// Device memory of the CUDA backend. Every allocation goes through one caching
// pool: sizes are rounded up to buckets and freed blocks wait on per-bucket free
// lists for the next request of the same bucket, so the fixed shapes of a
// training step stop calling cudaMalloc after the first step. All work runs on
// the backend's single stream, which orders a block's reuse after its last use.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "plora/backend/cuda/context.cuh"
#include "plora/core/host_matrix.hpp"
#include "plora/core/view.hpp"

namespace plora {

namespace detail::cuda {

/// Bytes handed out, bytes waiting on the free lists, and the most bytes
/// handed out at once since the pool began or since reset_peak().
struct MemoryStats {
  std::size_t bytes_in_use = 0;
  std::size_t bytes_cached = 0;
  std::size_t peak_bytes_in_use = 0;
};

class DevicePool {
 public:
  /// Requests are served in buckets: multiples of 512 B below 1 MiB (small
  /// tensors, index lists), multiples of 2 MiB above (weights, activations).
  static std::size_t bucket_size(std::size_t bytes) {
    constexpr std::size_t kSmallUnit = 512, kLargeUnit = std::size_t{2} << 20, kLargeFrom = std::size_t{1} << 20;
    const std::size_t unit = bytes < kLargeFrom ? kSmallUnit : kLargeUnit;
    return (bytes + unit - 1) / unit * unit;
  }

  /// A block of at least `bytes` (> 0) bytes; throws plora::Error when the
  /// device is out of memory even after the cache was returned to the driver.
  void* allocate(std::size_t bytes) {
    const std::size_t bucket = bucket_size(bytes);
    const std::lock_guard lock(mutex_);
    if (auto found = free_.find(bucket); found != free_.end() && !found->second.empty()) {
      void* block = found->second.back();
      found->second.pop_back();
      stats_.bytes_cached -= bucket;
      hand_out_locked(bucket);
      return block;
    }
    void* block = nullptr;
    cudaError_t status = cudaMalloc(&block, bucket);
    if (status == cudaErrorMemoryAllocation) {
      static_cast<void>(cudaGetLastError());
      release_cached_locked();
      status = cudaMalloc(&block, bucket);
    }
    if (status == cudaErrorMemoryAllocation) {
      static_cast<void>(cudaGetLastError());
      std::size_t free_bytes = 0, total_bytes = 0;
      PLORA_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
      throw Error(plora::detail::concat("CUDA backend: out of device memory: requested ", bytes, " bytes (",
                                        bucket, " after pool rounding), ", free_bytes, " bytes free of ", total_bytes,
                                        ", ", stats_.bytes_in_use, " bytes held by live plora buffers"));
    }
    PLORA_CUDA_CHECK(status);
    hand_out_locked(bucket);
    return block;
  }

  void deallocate(void* block, std::size_t bytes) noexcept {
    const std::size_t bucket = bucket_size(bytes);
    const std::lock_guard lock(mutex_);
    try {
      free_[bucket].push_back(block);
    } catch (...) {
      // No room to remember the block: hand it back to the driver instead.
      static_cast<void>(cudaFree(block));
      stats_.bytes_in_use -= bucket;
      return;
    }
    stats_.bytes_in_use -= bucket;
    stats_.bytes_cached += bucket;
  }

  /// Returns every cached block to the driver (after the stream's pending work).
  void release_cached() {
    const std::lock_guard lock(mutex_);
    release_cached_locked();
  }

  [[nodiscard]] MemoryStats stats() const {
    const std::lock_guard lock(mutex_);
    return stats_;
  }

  /// Starts a new peak from the bytes in use now.
  void reset_peak() {
    const std::lock_guard lock(mutex_);
    stats_.peak_bytes_in_use = stats_.bytes_in_use;
  }

 private:
  void hand_out_locked(std::size_t bucket) {
    stats_.bytes_in_use += bucket;
    stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
  }

  void release_cached_locked() {
    PLORA_CUDA_CHECK(cudaStreamSynchronize(stream()));
    for (auto& [bucket, blocks] : free_) {
      for (void* block : blocks) PLORA_CUDA_CHECK(cudaFree(block));
      stats_.bytes_cached -= bucket * blocks.size();
      blocks.clear();
    }
  }

  mutable std::mutex mutex_;
  std::unordered_map<std::size_t, std::vector<void*>> free_;
  MemoryStats stats_;
};

/// The process-wide pool. Never destroyed, so that buffers in static objects
/// can still return their blocks during shutdown.
inline DevicePool& pool() {
  static DevicePool* const shared = new DevicePool;
  return *shared;
}

/// An owning, uninitialised device array of `count` T's from the pool.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t count)
      : count_(count), data_(count == 0 ? nullptr : static_cast<T*>(pool().allocate(count * sizeof(T)))) {}
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : count_(std::exchange(other.count_, 0)), data_(std::exchange(other.data_, nullptr)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      release();
      count_ = std::exchange(other.count_, 0);
      data_ = std::exchange(other.data_, nullptr);
    }
    return *this;
  }
  ~DeviceBuffer() { release(); }

  [[nodiscard]] T* data() const { return data_; }
  [[nodiscard]] std::size_t size() const { return count_; }

 private:
  void release() noexcept {
    if (data_ != nullptr) pool().deallocate(data_, count_ * sizeof(T));
    data_ = nullptr;
    count_ = 0;
  }
  std::size_t count_ = 0;
  T* data_ = nullptr;
};

}  // namespace detail::cuda

/// An owning row-major float matrix in device memory: the CUDA backend's
/// Matrix. Copies are deep (device to device, on the backend's stream).
class DeviceMatrix {
 public:
  DeviceMatrix() = default;
  /// A zero-filled (rows x cols) matrix.
  DeviceMatrix(Index rows, Index cols) : DeviceMatrix(rows, cols, Uninitialised{}) {
    if (rows_ * cols_ > 0)
      PLORA_CUDA_CHECK(cudaMemsetAsync(values_.data(), 0, values_.size() * sizeof(float), detail::cuda::stream()));
  }
  DeviceMatrix(const DeviceMatrix& other) : DeviceMatrix(other.rows_, other.cols_, Uninitialised{}) {
    if (rows_ * cols_ > 0)
      PLORA_CUDA_CHECK(cudaMemcpyAsync(values_.data(), other.values_.data(), values_.size() * sizeof(float),
                                       cudaMemcpyDeviceToDevice, detail::cuda::stream()));
  }
  DeviceMatrix& operator=(const DeviceMatrix& other) {
    if (this != &other) *this = DeviceMatrix(other);
    return *this;
  }
  DeviceMatrix(DeviceMatrix&& other) noexcept
      : rows_(std::exchange(other.rows_, 0)), cols_(std::exchange(other.cols_, 0)), values_(std::move(other.values_)) {}
  DeviceMatrix& operator=(DeviceMatrix&& other) noexcept {
    rows_ = std::exchange(other.rows_, 0);
    cols_ = std::exchange(other.cols_, 0);
    values_ = std::move(other.values_);
    return *this;
  }
  ~DeviceMatrix() = default;

  [[nodiscard]] Index rows() const { return rows_; }
  [[nodiscard]] Index cols() const { return cols_; }
  [[nodiscard]] Index size() const { return rows_ * cols_; }
  [[nodiscard]] float* data() { return values_.data(); }
  [[nodiscard]] const float* data() const { return values_.data(); }

  [[nodiscard]] View<Device> view() { return {values_.data(), rows_, cols_}; }
  [[nodiscard]] ConstView<Device> view() const { return {values_.data(), rows_, cols_}; }
  [[nodiscard]] ConstView<Device> cview() const { return view(); }
  operator View<Device>() { return view(); }
  operator ConstView<Device>() const { return view(); }

 private:
  struct Uninitialised {};
  DeviceMatrix(Index rows, Index cols, Uninitialised)
      : rows_(rows), cols_(cols), values_(checked_count(rows, cols)) {}
  static std::size_t checked_count(Index rows, Index cols) {
    return static_cast<std::size_t>(plora::detail::element_count("DeviceMatrix", rows, cols));
  }
  Index rows_ = 0;
  Index cols_ = 0;
  detail::cuda::DeviceBuffer<float> values_;
};

/// A device int32 index list (kept rows / columns, labels). The host copy it
/// was made from is kept so that indices are validated without a device read.
class DeviceIndices {
 public:
  DeviceIndices() = default;
  explicit DeviceIndices(std::span<const std::int32_t> ids) : host_(ids.begin(), ids.end()), values_(ids.size()) {
    if (!host_.empty())
      PLORA_CUDA_CHECK(cudaMemcpyAsync(values_.data(), host_.data(), host_.size() * sizeof(std::int32_t),
                                       cudaMemcpyHostToDevice, detail::cuda::stream()));
  }
  DeviceIndices(const DeviceIndices& other) : DeviceIndices(std::span<const std::int32_t>(other.host_)) {}
  DeviceIndices& operator=(const DeviceIndices& other) {
    if (this != &other) *this = DeviceIndices(other);
    return *this;
  }
  DeviceIndices(DeviceIndices&&) noexcept = default;
  DeviceIndices& operator=(DeviceIndices&&) noexcept = default;
  ~DeviceIndices() = default;

  [[nodiscard]] Index size() const { return static_cast<Index>(host_.size()); }
  [[nodiscard]] const std::int32_t* data() const { return values_.data(); }
  /// The same indices in host memory.
  [[nodiscard]] std::span<const std::int32_t> host() const { return host_; }

 private:
  std::vector<std::int32_t> host_;
  detail::cuda::DeviceBuffer<std::int32_t> values_;
};

}  // namespace plora
