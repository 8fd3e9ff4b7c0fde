#pragma once
// Reusable buffers for modules, adapters and their Saved state. A Scratch grows to the
// largest token count it has seen and hands out leading-row windows, so steps
// with repeating (or smaller) shapes allocate nothing, and one adapter applied
// to inputs of different lengths (DeBERTa's content and relative positions)
// does not reallocate on every alternation.
#include "plora/backend/concepts.hpp"

namespace plora::detail {

template <Backend B>
class Scratch {
 public:
  /// A (rows x cols) window; reallocates only when cols change or rows grow.
  View<typename B::Space> rows(Index count, Index cols) {
    const auto current = matrix_.view();
    if (current.cols != cols || current.rows < count) matrix_ = typename B::Matrix(count, cols);
    return matrix_.view().row_block(0, count);
  }
  /// The leading `count` rows as last written.
  [[nodiscard]] ConstView<typename B::Space> rows(Index count) const { return matrix_.view().row_block(0, count); }

 private:
  typename B::Matrix matrix_;
};

}  // namespace plora::detail
