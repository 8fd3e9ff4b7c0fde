#pragma once
// Non-owning row-major matrix views. A view carries the memory space it points
// into (Host or Device) in its type, so a host buffer can never be handed to a
// device kernel by accident. Vectors are 1 x n views.
#include <cstdint>
#include <type_traits>

namespace plora {

using Index = std::int64_t;

/// Memory-space tags.
struct Host {};
struct Device {};

/// A row-major (rows x cols) window with leading dimension `ld` (elements
/// between the starts of consecutive rows; ld >= cols).
/// @tparam T      float or const float
/// @tparam Space  Host or Device
template <class T, class Space>
struct MatrixView {
  T* data = nullptr;
  Index rows = 0;
  Index cols = 0;
  Index ld = 0;

  constexpr MatrixView() = default;
  constexpr MatrixView(T* data_, Index rows_, Index cols_, Index ld_)
      : data(data_), rows(rows_), cols(cols_), ld(ld_) {}
  constexpr MatrixView(T* data_, Index rows_, Index cols_) : MatrixView(data_, rows_, cols_, cols_) {}

  /// A mutable view converts to a const one, never the reverse.
  template <class U>
    requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
  constexpr MatrixView(const MatrixView<U, Space>& other)
      : data(other.data), rows(other.rows), cols(other.cols), ld(other.ld) {}

  [[nodiscard]] constexpr Index size() const { return rows * cols; }
  [[nodiscard]] constexpr bool empty() const { return rows == 0 || cols == 0; }
  [[nodiscard]] constexpr bool contiguous() const { return ld == cols || rows <= 1; }

  /// Rows [first, first + count).
  [[nodiscard]] constexpr MatrixView row_block(Index first, Index count) const {
    return {data + first * ld, count, cols, ld};
  }
  /// Rows 0, step, 2 step, ... (a whole number of steps): token 0 of every
  /// sequence when step is the sequence length.
  [[nodiscard]] constexpr MatrixView every_nth_row(Index step) const { return {data, rows / step, cols, ld * step}; }
  /// Columns [first, first + count) of every row.
  [[nodiscard]] constexpr MatrixView col_block(Index first, Index count) const {
    return {data + first, rows, count, ld};
  }
  [[nodiscard]] constexpr MatrixView block(Index row, Index col, Index nrows, Index ncols) const {
    return {data + row * ld + col, nrows, ncols, ld};
  }

  /// Element access exists only for host memory.
  constexpr T& operator()(Index r, Index c) const
    requires std::is_same_v<Space, Host>
  {
    return data[r * ld + c];
  }
};

template <class Space>
using View = MatrixView<float, Space>;
template <class Space>
using ConstView = MatrixView<const float, Space>;

using HostView = View<Host>;
using ConstHostView = ConstView<Host>;

}  // namespace plora
