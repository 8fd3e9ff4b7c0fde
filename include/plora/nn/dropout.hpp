#pragma once
// Inverted dropout on activations (torch.nn.Dropout in training mode): x ⊙ m
// with m = 0 at probability p, else 1 / (1 - p). Masks come from
// B::dropout_mask at the offset of the caller's counter-based stream, which
// advances by the elements drawn, so a run is reproducible and a checkpoint
// that saves the offset resumes exactly.
#include <cstdint>
#include <utility>

#include "plora/backend/scratch.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/core/rng.hpp"

namespace plora {

template <Backend B>
class Dropout {
 public:
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  Dropout() = default;
  explicit Dropout(float p) : p_(p) {
    check<ValueError>(p >= 0.0f && p < 1.0f, "dropout probability ", p, " is outside [0, 1)");
  }

  [[nodiscard]] float probability() const { return p_; }
  /// Whether a forward with this stream drops anything (null: evaluation).
  [[nodiscard]] bool active(const RandomStream* stream) const { return stream != nullptr && p_ > 0.0f; }
  /// Whether the last forward dropped anything (and backward will mask).
  [[nodiscard]] bool applied() const { return applied_; }

  /// x ⊙= a fresh mask drawn from `stream` when active(stream); otherwise x
  /// is left alone (and may be empty). Keeps the mask for backward.
  void forward(View x, RandomStream* stream) {
    applied_ = active(stream);
    if (!applied_) return;
    const View mask = mask_.rows(x.rows, x.cols);
    B::dropout_mask(mask, p_, stream->seed(), stream->stream(), stream->offset());
    stream->set_offset(stream->offset() + static_cast<std::uint64_t>(x.size()));
    B::mul(x, mask);
  }

  /// A residual branch, out = residual + dropout(branch), in two calls: the
  /// branch's output projection adds residual_to_fuse(residual, stream) itself
  /// (the residual when nothing is dropped, else nothing), then
  /// forward_and_add(out, stream, residual) drops and adds it if the
  /// projection could not.
  [[nodiscard]] ConstView residual_to_fuse(ConstView residual, const RandomStream* stream) const {
    return active(stream) ? ConstView{} : residual;
  }
  void forward_and_add(View out, RandomStream* stream, ConstView residual) {
    forward(out, stream);
    if (applied_) B::axpy(out, 1.0f, residual);
  }

  /// The gradient at the dropout's input: dy itself when the forward dropped
  /// nothing, else out = dy ⊙ mask (out may be dy).
  [[nodiscard]] ConstView backward(View out, ConstView dy) const {
    if (!applied_) return dy;
    if (out.data != dy.data) B::copy(out, dy);
    B::mul(out, mask_.rows(dy.rows));
    return out;
  }

  /// Exchanges the forward state (not p) with another dropout.
  void swap_activations(Dropout& other) noexcept {
    std::swap(mask_, other.mask_);
    std::swap(applied_, other.applied_);
  }

 private:
  float p_ = 0.0f;
  bool applied_ = false;
  detail::Scratch<B> mask_;  // (rows, cols) of the last forward, entries 0 or 1 / (1 - p)
};

/// Dropout that keeps its input and drops a copy it owns: attention
/// probabilities (the softmax backward needs them undropped) and DeBERTa's
/// relative embeddings (shared by every layer, each layer drops its own).
template <Backend B>
class CopyingDropout {
 public:
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  CopyingDropout() = default;
  explicit CopyingDropout(float p) : dropout_(p) {}

  /// x, or a copy of x ⊙ a fresh mask when a forward with `stream` drops.
  ConstView forward(ConstView x, RandomStream* stream) {
    if (!dropout_.active(stream)) {
      dropout_.forward(View{}, nullptr);  // records that this pass dropped nothing
      return x;
    }
    const View copy = copy_.rows(x.rows, x.cols);
    B::copy(copy, x);
    dropout_.forward(copy, stream);
    return copy;
  }
  [[nodiscard]] float probability() const { return dropout_.probability(); }
  /// Whether a forward with this stream drops anything.
  [[nodiscard]] bool active(const RandomStream* stream) const { return dropout_.active(stream); }
  /// Whether the last forward dropped anything (and returned the copy).
  [[nodiscard]] bool applied() const { return dropout_.applied(); }
  /// What the last forward returned for this x.
  [[nodiscard]] ConstView output(ConstView x) const { return dropout_.applied() ? copy_.rows(x.rows) : x; }
  /// The gradient at the input from the gradient at the output, in place.
  void backward(View d) const { (void)dropout_.backward(d, d); }

  void swap_activations(CopyingDropout& other) noexcept {
    dropout_.swap_activations(other.dropout_);
    std::swap(copy_, other.copy_);
  }

 private:
  Dropout<B> dropout_;
  detail::Scratch<B> copy_;  // the dropped copy of the last forward's input
};

}  // namespace plora
