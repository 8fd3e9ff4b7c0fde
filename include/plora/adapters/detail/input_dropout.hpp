#pragma once
// Inverted dropout on the input of a low-rank adapter branch (PEFT's
// lora_dropout): active only in training mode with p > 0, and only on the
// branch, never on the frozen base path. The branch drops a copy of x
// (CopyingDropout), drawn from the adapter's own counter-based stream.
//
// The forward state lives in the caller's Saved, one per application, not in
// the adapter: a shared site (DeBERTa's relative projections) applies the
// same adapter more than once before its backwards run.
#include "plora/backend/concepts.hpp"
#include "plora/backend/scratch.hpp"
#include "plora/core/rng.hpp"
#include "plora/nn/dropout.hpp"

namespace plora::detail {

template <Backend B>
class InputDropout {
 public:
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  /// What backward needs: the mask and the dropped input, when dropout applied.
  struct Saved {
    CopyingDropout<B> dropout;
  };

  InputDropout() = default;
  InputDropout(float p, RandomStream stream) : p_(p), stream_(stream) {}

  /// The branch input: x itself, or x ⊙ (a fresh mask) in training mode.
  ConstView forward(ConstView x, Saved& saved) {
    if (saved.dropout.probability() != p_) saved.dropout = CopyingDropout<B>(p_);
    return saved.dropout.forward(x, training_ ? &stream_ : nullptr);
  }

  /// The input the branch saw in the forward that filled `saved`.
  [[nodiscard]] ConstView input(ConstView x, const Saved& saved) const { return saved.dropout.output(x); }

  /// dx (tokens, in) += (d_branch (tokens, r) factor (r, in)) ⊙ mask.
  void add_input_grad(View dx, ConstView d_branch, ConstView factor, const Saved& saved, Scratch<B>& scratch) const {
    if (!saved.dropout.applied()) {
      B::gemm(dx, d_branch, Op::N, factor, Op::N, 1.0f, 1.0f);
      return;
    }
    const View through = scratch.rows(dx.rows, dx.cols);
    B::gemm(through, d_branch, Op::N, factor, Op::N, 1.0f, 0.0f);
    saved.dropout.backward(through);
    B::axpy(dx, 1.0f, through);
  }

  void set_training(bool training) { training_ = training; }
  [[nodiscard]] bool training() const { return training_; }
  [[nodiscard]] float probability() const { return p_; }
  [[nodiscard]] RandomStream& stream() { return stream_; }

 private:
  float p_ = 0.0f;
  RandomStream stream_;
  bool training_ = true;  // like a freshly built torch.nn.Module
};

}  // namespace plora::detail
