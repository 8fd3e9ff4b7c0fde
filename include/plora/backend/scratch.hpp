#pragma once
// Reusable buffers for modules, adapters and their Saved state. A Scratch
// holds as many elements as the largest matrix asked of it and hands out
// contiguous matrices over them, so steps with repeating (or smaller) shapes
// allocate nothing, and users that alternate shapes do not reallocate on every
// alternation: one adapter applied to inputs of different lengths (DeBERTa's
// content and relative positions), or the fold buffer every site of a model
// shares.
#include "plora/backend/concepts.hpp"

namespace plora::detail {

template <Backend B>
class Scratch {
 public:
  /// A contiguous (count x cols) matrix over the held elements; reallocates
  /// only when it needs more of them than it holds.
  View<typename B::Space> rows(Index count, Index cols) {
    if (storage_.view().size() < count * cols) storage_ = typename B::Matrix(1, count * cols);
    cols_ = cols;
    return {storage_.view().data, count, cols};
  }
  /// The leading `count` rows of the last matrix handed out, as last written.
  [[nodiscard]] ConstView<typename B::Space> rows(Index count) const { return {storage_.view().data, count, cols_}; }

 private:
  typename B::Matrix storage_;
  Index cols_ = 0;
};

}  // namespace plora::detail
