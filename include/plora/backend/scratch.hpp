#pragma once
// Reusable buffers for modules, adapters and their Saved state. A Scratch grows to the
// largest token count it has seen and hands out leading-row windows, so steps
// with repeating (or smaller) shapes allocate nothing, and one adapter applied
// to inputs of different lengths (DeBERTa's content and relative positions)
// does not reallocate on every alternation. A ShapedScratch holds whatever
// shape fits in its elements, for users that alternate shapes (a fold buffer
// shared by every site of a model).
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

template <Backend B>
class ShapedScratch {
 public:
  /// A contiguous (rows x cols) matrix over the held elements; reallocates
  /// only when it needs more of them than it holds.
  View<typename B::Space> shaped(Index rows, Index cols) {
    if (storage_.view().size() < rows * cols) storage_ = typename B::Matrix(1, rows * cols);
    return {storage_.view().data, rows, cols};
  }

 private:
  typename B::Matrix storage_;
};

}  // namespace plora::detail
