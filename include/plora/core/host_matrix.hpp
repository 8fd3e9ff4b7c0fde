#pragma once
// An owning row-major float matrix in host memory. It is the CPU backend's
// matrix type and the exchange type of io/ (files load into it, reports read it).
//
// Its storage starts on a 64-byte boundary. Vectorised reductions (Eigen's
// sums and dot products) peel scalars up to the first aligned packet, so with
// malloc's 16-byte alignment their summation order, and the rounding of
// every result, would depend on where the heap happened to place a buffer: the
// same run could train differently from one output directory to another.
#include <algorithm>
#include <cstddef>
#include <new>
#include <string_view>
#include <utility>
#include <vector>

#include "plora/core/error.hpp"
#include "plora/core/view.hpp"

namespace plora {

/// std::allocator with the alignment of a cache line (and of an AVX-512 packet).
template <class T>
struct CacheLineAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlignment{64};

  CacheLineAllocator() = default;
  template <class U>
  explicit CacheLineAllocator(const CacheLineAllocator<U>& /*other*/) {}

  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlignment)); }
  void deallocate(T* p, std::size_t /*n*/) { ::operator delete(p, kAlignment); }

  template <class U>
  bool operator==(const CacheLineAllocator<U>& /*other*/) const {
    return true;
  }
};

namespace detail {
/// rows * cols of a `matrix` ("HostMatrix", "DeviceMatrix"); ShapeError for a
/// negative extent or a count beyond an Index (size() and every row offset are
/// computed in one).
inline Index element_count(std::string_view matrix, Index rows, Index cols) {
  check<ShapeError>(rows >= 0 && cols >= 0, matrix, ": negative shape ", rows, " x ", cols);
  Index count = 0;
  check<ShapeError>(!__builtin_mul_overflow(rows, cols, &count), matrix, ": a ", rows, " x ", cols,
                    " matrix has too many elements to address");
  return count;
}
}  // namespace detail

class HostMatrix {
 public:
  using Values = std::vector<float, CacheLineAllocator<float>>;

  HostMatrix() = default;
  /// A zero-filled (rows x cols) matrix.
  HostMatrix(Index rows, Index cols) : rows_(rows), cols_(cols), values_(checked_size(rows, cols), 0.0f) {}
  /// A copy of `values` (rows * cols of them) into aligned storage.
  HostMatrix(Index rows, Index cols, const std::vector<float>& values)
      : HostMatrix(adopt(rows, cols, Values(values.begin(), values.end()))) {}
  /// Takes over `values` (rows * cols of them) without copying.
  static HostMatrix adopt(Index rows, Index cols, Values values) {
    HostMatrix m;
    check<ShapeError>(values.size() == checked_size(rows, cols), "HostMatrix: ", values.size(),
                      " values given for a ", rows, " x ", cols, " matrix");
    m.rows_ = rows;
    m.cols_ = cols;
    m.values_ = std::move(values);
    return m;
  }
  /// A deep copy of any host view.
  explicit HostMatrix(ConstHostView source) : HostMatrix(source.rows, source.cols) {
    for (Index r = 0; r < rows_; ++r) std::copy_n(source.data + r * source.ld, cols_, values_.data() + r * cols_);
  }

  [[nodiscard]] Index rows() const { return rows_; }
  [[nodiscard]] Index cols() const { return cols_; }
  [[nodiscard]] Index size() const { return rows_ * cols_; }
  [[nodiscard]] float* data() { return values_.data(); }
  [[nodiscard]] const float* data() const { return values_.data(); }
  [[nodiscard]] Values& values() { return values_; }
  [[nodiscard]] const Values& values() const { return values_; }

  [[nodiscard]] HostView view() { return {values_.data(), rows_, cols_}; }
  [[nodiscard]] ConstHostView view() const { return {values_.data(), rows_, cols_}; }
  [[nodiscard]] ConstHostView cview() const { return view(); }
  operator HostView() { return view(); }
  operator ConstHostView() const { return view(); }

  float& operator()(Index r, Index c) { return values_[static_cast<std::size_t>(r * cols_ + c)]; }
  float operator()(Index r, Index c) const { return values_[static_cast<std::size_t>(r * cols_ + c)]; }

 private:
  static std::size_t checked_size(Index rows, Index cols) {
    const auto size = static_cast<std::size_t>(detail::element_count("HostMatrix", rows, cols));
    check<ShapeError>(size <= Values().max_size(), "HostMatrix: a ", rows, " x ", cols,
                      " matrix has too many elements to address");  // its byte count must fit a size_t
    return size;
  }
  Index rows_ = 0;
  Index cols_ = 0;
  Values values_;
};

/// Throws a ShapeError naming `what` unless `view` is (rows x cols).
template <class T, class Space>
inline void require_shape(const MatrixView<T, Space>& view, Index rows, Index cols, std::string_view what) {
  check<ShapeError>(view.rows == rows && view.cols == cols, what, ": expected shape ", rows, " x ", cols, ", got ",
                    view.rows, " x ", view.cols);
}

}  // namespace plora
