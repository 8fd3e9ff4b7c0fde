#pragma once
// The transformer feed-forward block: out = W2 gelu(W1 x + b1) + b2, both
// dense layers adaptable sites, GELU the exact erf form (transformers' "gelu").
#include <utility>

#include "plora/backend/scratch.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/nn/backward_scratch.hpp"
#include "plora/nn/linear_site.hpp"

namespace plora {

/// What a forward keeps besides its output: what its backward reads, or
/// nothing (inference, no backward follows).
enum class Keep { for_backward, nothing };

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
  /// when not empty), x (rows, in). For the backward it keeps the
  /// pre-activation (GELU's input) and the activation (the output site's
  /// input); with Keep::nothing the GELU runs in place on the intermediate
  /// output, which saves a write of the block's widest activation.
  void forward(View out, ConstView x, ConstView residual = {}, Keep keep = Keep::for_backward) {
    const Index inner = intermediate_.out_features();
    const View act = act_.rows(x.rows, inner);
    const View pre = keep == Keep::for_backward ? pre_.rows(x.rows, inner) : act;
    intermediate_.forward_gelu(pre, act, x, saved_intermediate_);
    output_.forward(out, act, saved_output_, residual);
    kept_ = keep;
  }

  /// dx (rows, in) from dout (rows, out) and the forward input x; an empty dx
  /// skips the input gradient. Site gradients accumulate.
  void backward(View dx, ConstView dout, ConstView x, BackwardScratch<B>& scratch) {
    check<ValueError>(kept_ == Keep::for_backward, intermediate_.name(),
                      ": backward without a forward that kept its activations (Keep::for_backward)");
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
    std::swap(kept_, other.kept_);
  }

 private:
  Site intermediate_, output_;
  detail::Scratch<B> pre_;  // (rows, inner) intermediate output, GELU input
  detail::Scratch<B> act_;  // (rows, inner) GELU output, output-site input
  typename Site::Saved saved_intermediate_, saved_output_;
  Keep kept_ = Keep::nothing;  // by the last forward
};

}  // namespace plora
