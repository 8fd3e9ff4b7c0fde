#pragma once
// Random Masking (Xu & Zhang 2024): train a fixed random sparse subset of the
// entries of ΔW. Entry (r, c) is kept when uniform_at(seed, stream, offset +
// r * in + c) < density, so the support is the same on every backend and
// thread count; if no entry passes, the one with the smallest draw is kept.
//
// ΔW is stored dense, zero off the support, and its gradient is masked. The
// optimizer sees the dense masked gradient: off-support entries have value 0
// and gradient 0, so they stay exactly zero under SGD and AdamW, weight decay
// included (decay scales 0, the moments stay 0, the update is 0 / (0 + eps)).
#include <cstdint>

#include "plora/adapters/detail/checks.hpp"
#include "plora/adapters/full_delta.hpp"
#include "plora/core/host_matrix.hpp"
#include "plora/core/rng.hpp"

namespace plora {

struct RandomMaskingConfig {
  double density = 0.01;  ///< expected fraction of trained entries, in (0, 1]
};

/// @tparam B  backend holding ΔW and its support mask
template <Backend B>
class RandomMasking {
 public:
  using BackendType = B;
  using Config = RandomMaskingConfig;
  using Matrix = typename B::Matrix;
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;
  using Saved = typename FullDelta<B>::Saved;

  /// The support comes from `init`'s (seed, stream, offset); ΔW = 0.
  RandomMasking(Index out, Index in, const Config& config, RandomStream init)
      : dense_(out, in, FullDeltaConfig{}, init), mask_(support(out, in, config, init)),
        kept_(static_cast<Index>(B::sum_squares(mask_.view()))) {}

  /// y (T, out) += x ΔW^T (ΔW is zero off the support)
  void forward(View y, ConstView x, Saved& saved) { dense_.forward(y, x, saved); }
  /// dΔW += (dy^T x) ⊙ mask;  dx += dy ΔW
  void backward(View dx, ConstView dy, ConstView x, const Saved& saved) {
    dense_.backward(dx, dy, x, saved);
    B::mul(dense_.delta_W_grad(), mask_.view());  // earlier accumulations are already zero off the support
  }

  [[nodiscard]] ParameterList<typename B::Space> parameters() { return dense_.parameters(); }
  void zero_grad() { dense_.zero_grad(); }
  /// The number of entries on the support.
  [[nodiscard]] Index trainable_count() const { return kept_; }
  [[nodiscard]] Matrix delta() const { return dense_.delta(); }
  void merge_into(View weight) const { dense_.merge_into(weight); }
  void unmerge_from(View weight) const { dense_.unmerge_from(weight); }
  void set_training(bool training) { dense_.set_training(training); }
  [[nodiscard]] Index in_features() const { return dense_.in_features(); }
  [[nodiscard]] Index out_features() const { return dense_.out_features(); }

  /// folded = W + ΔW for a folding site (FoldableAdapter); ΔW is zero off the support.
  void fold_into(View folded, ConstView weight) const { dense_.fold_into(folded, weight); }

  [[nodiscard]] View delta_W() { return dense_.delta_W(); }
  [[nodiscard]] ConstView delta_W() const { return dense_.delta_W(); }
  /// 1 on the support, 0 elsewhere (out x in).
  [[nodiscard]] ConstView mask() const { return mask_.view(); }

 private:
  static Matrix support(Index out, Index in, const Config& config, const RandomStream& init) {
    check<ValueError>(config.density > 0.0 && config.density <= 1.0, "RandomMasking: density = ", config.density,
                      " is outside (0, 1]");
    HostMatrix mask(out, in);
    bool any = false;
    std::uint64_t smallest_index = 0;
    float smallest = 2.0f;
    for (std::uint64_t i = 0; i < static_cast<std::uint64_t>(out * in); ++i) {
      const float draw = RandomStream::uniform_at(init.seed(), init.stream(), init.offset() + i);
      if (static_cast<double>(draw) < config.density) {
        mask.values()[i] = 1.0f;
        any = true;
      }
      if (draw < smallest) {
        smallest = draw;
        smallest_index = i;
      }
    }
    if (!any) mask.values()[smallest_index] = 1.0f;
    return to_backend<B>(mask.view());
  }

  FullDelta<B> dense_;
  Matrix mask_;  // (out, in)
  Index kept_ = 0;  // entries of the mask: its sum of squares, exact for 0/1 values
};

}  // namespace plora
