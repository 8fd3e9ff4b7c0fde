#pragma once
// Reusable buffers for modules, adapters and their Saved state. A Scratch
// holds as many elements as the largest matrix asked of it and hands out
// contiguous matrices over them, so steps with repeating (or smaller) shapes
// allocate nothing, and users that alternate shapes do not reallocate on every
// alternation: one adapter applied to inputs of different lengths (DeBERTa's
// content and relative positions), or the fold buffer every site of a model
// shares (through a SharedBuffer).
#include <memory>
#include <utility>

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

/// A buffer that users running one at a time may share (the sites of a model
/// share one fold buffer, its Partial adapters one set of work buffers); one
/// is made on first use if none was shared. Moves keep the sharing; a copy
/// starts without a buffer, because a copy (a copied model, an extraction
/// replica) may run beside the original.
template <class T>
class SharedBuffer {
 public:
  SharedBuffer() = default;
  SharedBuffer(const SharedBuffer& /*other*/) noexcept {}
  SharedBuffer(SharedBuffer&&) noexcept = default;
  SharedBuffer& operator=(const SharedBuffer& /*other*/) noexcept {
    shared_.reset();
    return *this;
  }
  SharedBuffer& operator=(SharedBuffer&&) noexcept = default;
  ~SharedBuffer() = default;

  void share(std::shared_ptr<T> buffer) { shared_ = std::move(buffer); }
  /// The buffer, made now if none was shared.
  T& get() {
    if (!shared_) shared_ = std::make_shared<T>();
    return *shared_;
  }
  /// The buffer, or null before it is shared or first used.
  [[nodiscard]] const T* peek() const { return shared_.get(); }

 private:
  std::shared_ptr<T> shared_;
};

}  // namespace plora::detail
