#pragma once
// The transformer feed-forward block: out = W2 gelu(W1 x + b1) + b2, both
// dense layers adaptable sites, GELU the exact erf form (transformers' "gelu").
#include <utility>

#include "plora/backend/scratch.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/nn/backward_scratch.hpp"
#include "plora/nn/linear_site.hpp"

namespace plora {

/// @tparam B  backend
/// @tparam A  adapter type the two sites may carry
template <Backend B, Adapter A>
class Mlp {
 public:
  using Site = LinearSite<B, A>;
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  Mlp() = default;
  /// intermediate: (inner x in); output: (out x inner)
  Mlp(Site intermediate, Site output) : intermediate_(std::move(intermediate)), output_(std::move(output)) {
    check<ShapeError>(output_.in_features() == intermediate_.out_features(), output_.name(), ": expected ",
                      intermediate_.out_features(), " input features (", intermediate_.name(), "'s outputs), got ",
                      output_.in_features());
  }

  [[nodiscard]] Site& intermediate() { return intermediate_; }
  [[nodiscard]] Site& output() { return output_; }

  /// out (rows, out) = output(gelu(intermediate(x))) (+ residual, like out,
  /// when not empty), x (rows, in); keeps the pre-activation (GELU's input)
  /// and the activation (the output site's input).
  void forward(View out, ConstView x, ConstView residual = {}) {
    const Index inner = intermediate_.out_features();
    const View pre = pre_.rows(x.rows, inner), act = act_.rows(x.rows, inner);
    intermediate_.forward_gelu(pre, act, x, saved_intermediate_);
    output_.forward(out, act, saved_output_, residual);
  }

  /// dx (rows, in) from dout (rows, out) and the forward input x; an empty dx
  /// skips the input gradient. Site gradients accumulate.
  void backward(View dx, ConstView dout, ConstView x, BackwardScratch<B>& scratch) {
    const Index inner = intermediate_.out_features();
    const View d_act = scratch.d_activation.rows(x.rows, inner);
    const View d_pre = scratch.d_preactivation.rows(x.rows, inner);
    output_.backward(d_act, dout, act_.rows(x.rows), saved_output_);
    B::gelu_backward(d_pre, d_act, pre_.rows(x.rows));
    intermediate_.backward(dx, d_pre, x, saved_intermediate_);
  }

  /// Exchanges the forward state (not the weights) with another block.
  void swap_activations(Mlp& other) noexcept {
    std::swap(pre_, other.pre_);
    std::swap(act_, other.act_);
    std::swap(saved_intermediate_, other.saved_intermediate_);
    std::swap(saved_output_, other.saved_output_);
  }

 private:
  Site intermediate_, output_;
  detail::Scratch<B> pre_;  // (rows, inner) intermediate output, GELU input
  detail::Scratch<B> act_;  // (rows, inner) GELU output, output-site input
  typename Site::Saved saved_intermediate_, saved_output_;
};

}  // namespace plora
