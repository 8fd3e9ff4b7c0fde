#pragma once
// Inverted dropout on the input of a low-rank adapter branch (PEFT's
// lora_dropout): active only in training mode with p > 0, and only on the
// branch, never on the frozen base path. Masks come from B::dropout_mask with
// a counter-based stream whose offset advances by tokens * in per forward, so
// a run is reproducible and a checkpoint that saves the offset resumes exactly.
#include <cstdint>

#include "plora/adapters/detail/scratch.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/core/rng.hpp"

namespace plora::detail {

template <Backend B>
class InputDropout {
 public:
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  /// What backward needs: the mask and the dropped input, when dropout applied.
  struct Saved {
    Scratch<B> mask;     // (tokens, in), entries 0 or 1 / (1 - p)
    Scratch<B> dropped;  // (tokens, in), x ⊙ mask
    bool applied = false;
  };

  InputDropout() = default;
  InputDropout(float p, RandomStream stream) : p_(p), stream_(stream) {}

  /// The branch input: x itself, or x ⊙ (a fresh mask) in training mode.
  ConstView forward(ConstView x, Saved& saved) {
    saved.applied = training_ && p_ > 0.0f;
    if (!saved.applied) return x;
    const View mask = saved.mask.rows(x.rows, x.cols);
    B::dropout_mask(mask, p_, stream_.seed(), stream_.stream(), stream_.offset());
    stream_.set_offset(stream_.offset() + static_cast<std::uint64_t>(x.size()));
    const View dropped = saved.dropped.rows(x.rows, x.cols);
    B::copy(dropped, x);
    B::mul(dropped, mask);
    return dropped;
  }

  /// The input the branch saw in the forward that filled `saved`.
  [[nodiscard]] ConstView input(ConstView x, const Saved& saved) const {
    return saved.applied ? saved.dropped.rows(x.rows) : x;
  }

  /// dx (tokens, in) += (d_branch (tokens, r) factor (r, in)) ⊙ mask.
  void add_input_grad(View dx, ConstView d_branch, ConstView factor, const Saved& saved, Scratch<B>& scratch) const {
    if (!saved.applied) {
      B::gemm(dx, d_branch, Op::N, factor, Op::N, 1.0f, 1.0f);
      return;
    }
    const View through = scratch.rows(dx.rows, dx.cols);
    B::gemm(through, d_branch, Op::N, factor, Op::N, 1.0f, 0.0f);
    B::mul(through, saved.mask.rows(dx.rows));
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
