#pragma once
// Full fine-tuning of a linear weight as an adapter: ΔW (out x in) starts at
// zero and every entry is trained, so W + ΔW is the fine-tuned weight while W
// itself stays frozen (the site's one choke point applies it like any adapter).
#include "plora/adapters/concepts.hpp"
#include "plora/adapters/detail/checks.hpp"
#include "plora/core/rng.hpp"

namespace plora {

/// Full fine-tuning has no hyper-parameters.
struct FullDeltaConfig {};

/// @tparam B  backend holding ΔW
template <Backend B>
class FullDelta {
 public:
  using BackendType = B;
  using Config = FullDeltaConfig;
  using Matrix = typename B::Matrix;
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  /// Nothing to keep: backward needs only x and dy.
  struct Saved {};

  /// ΔW = 0; the stream is unused (uniform construction signature).
  FullDelta(Index out, Index in, const Config& /*config*/, RandomStream /*init*/) {
    detail::check_layer_shape("FullDelta", out, in);
    delta_ = Matrix(out, in);
    grad_ = Matrix(out, in);
  }

  /// y (T, out) += x (T, in) ΔW^T
  void forward(View y, ConstView x, Saved& /*saved*/) {
    detail::check_forward("FullDelta", y, x, out_features(), in_features());
    B::gemm(y, x, Op::N, delta_.view(), Op::T, 1.0f, 1.0f);
  }
  /// dΔW += dy^T x;  dx += dy ΔW (unless dx is empty)
  void backward(View dx, ConstView dy, ConstView x, const Saved& /*saved*/) {
    detail::check_backward("FullDelta", dx, dy, x, out_features(), in_features());
    B::gemm(grad_.view(), dy, Op::T, x, Op::N, 1.0f, 1.0f);
    if (!dx.empty()) B::gemm(dx, dy, Op::N, delta_.view(), Op::N, 1.0f, 1.0f);
  }

  [[nodiscard]] ParameterList<typename B::Space> parameters() { return {{"delta_W", delta_.view(), grad_.view()}}; }
  void zero_grad() { B::fill(grad_.view(), 0.0f); }
  [[nodiscard]] Index trainable_count() const { return out_features() * in_features(); }

  [[nodiscard]] Matrix delta() const {
    Matrix out(out_features(), in_features());
    B::copy(out.view(), delta_.view());
    return out;
  }
  void merge_into(View weight) const {
    require_shape(weight, out_features(), in_features(), "FullDelta::merge_into weight");
    B::axpy(weight, 1.0f, delta_.view());
  }
  void unmerge_from(View weight) const {
    require_shape(weight, out_features(), in_features(), "FullDelta::unmerge_from weight");
    B::axpy(weight, -1.0f, delta_.view());
  }

  /// No dropout: nothing depends on the mode.
  void set_training(bool /*training*/) {}
  [[nodiscard]] Index in_features() const { return delta_.view().cols; }
  [[nodiscard]] Index out_features() const { return delta_.view().rows; }

  /// folded = W + ΔW, for a site that folds this adapter into its GEMMs (FoldableAdapter).
  void fold_into(View folded, ConstView weight) const {
    require_shape(weight, out_features(), in_features(), "FullDelta::fold_into weight");
    require_shape(folded, out_features(), in_features(), "FullDelta::fold_into folded");
    B::copy(folded, weight);
    B::axpy(folded, 1.0f, delta_.view());
  }

  [[nodiscard]] View delta_W() { return delta_.view(); }
  [[nodiscard]] ConstView delta_W() const { return delta_.view(); }
  [[nodiscard]] View delta_W_grad() { return grad_.view(); }
  [[nodiscard]] ConstView delta_W_grad() const { return grad_.view(); }

 private:
  Matrix delta_;  // (out, in)
  Matrix grad_;   // (out, in)
};

}  // namespace plora
