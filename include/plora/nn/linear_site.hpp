#pragma once
// A frozen linear layer y = x W^T + b with an optional adapter: the one place
// where adapters apply (llama.cpp-style choke point). W (out x in) is never
// changed by training; merging an adapter into it is an explicit operation.
// The ratio extractors may override W temporarily and may ask for dL/dW (SNIP).
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "plora/adapters/concepts.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/backend/scratch.hpp"
#include "plora/core/error.hpp"

namespace plora {

/// @tparam B  backend
/// @tparam A  adapter type attached to this site (when one is attached)
template <Backend B, Adapter A>
class LinearSite {
 public:
  using Matrix = typename B::Matrix;
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  /// What backward needs besides the input x, kept by the caller per application.
  struct Saved {
    typename A::Saved adapter;
  };

  LinearSite() = default;
  /// @param weight (out x in)  @param bias (1 x out), or an empty matrix for no bias
  LinearSite(std::string name, Matrix weight, Matrix bias)
      : name_(std::move(name)), weight_(std::move(weight)), bias_(std::move(bias)) {
    check<ShapeError>(bias_.view().empty() || (bias_.view().rows == 1 && bias_.view().cols == out_features()),
                      name_, ": bias must be 1 x ", out_features(), ", got ", bias_.view().rows, " x ",
                      bias_.view().cols);
  }

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] Index in_features() const { return weight_.view().cols; }
  [[nodiscard]] Index out_features() const { return weight_.view().rows; }
  [[nodiscard]] ConstView weight() const { return weight_.view(); }
  /// Mutable access for explicit merges and the extractors' temporary overrides.
  [[nodiscard]] View mutable_weight() { return weight_.view(); }
  [[nodiscard]] ConstView bias() const { return bias_.view(); }

  void attach(A adapter) {
    check<ShapeError>(adapter.in_features() == in_features() && adapter.out_features() == out_features(), name_,
                      ": adapter is ", adapter.out_features(), " x ", adapter.in_features(), " but the weight is ",
                      out_features(), " x ", in_features());
    adapter_.emplace(std::move(adapter));
  }
  void detach() { adapter_.reset(); }

  [[nodiscard]] bool has_adapter() const { return adapter_.has_value(); }
  [[nodiscard]] A& adapter() { return checked_adapter(); }
  [[nodiscard]] const A& adapter() const { return const_cast<LinearSite*>(this)->checked_adapter(); }

  /// Where a FoldableAdapter's W + ΔW is formed, anew before each GEMM that
  /// reads it (the backward's too: forming costs a small fraction of that
  /// GEMM). Sites that run one at a time, as a model's do, may share one
  /// buffer (attach_adapters shares it): one weight-sized matrix per model
  /// instead of one per site. A site without one, and a copy of a site (a
  /// copied model may run beside the original), makes its own.
  using FoldBuffer = detail::Scratch<B>;
  void share_fold_buffer(std::shared_ptr<FoldBuffer> buffer) { fold_buffer_.share(std::move(buffer)); }
  /// The buffer this site forms W + ΔW in; null until shared or first needed.
  [[nodiscard]] const FoldBuffer* fold_buffer() const { return fold_buffer_.peek(); }

  /// Accumulate dL/dW into weight_grad() during backward (used by SNIP).
  void enable_weight_grad(bool enabled) {
    if (enabled && !weight_grad_) {
      weight_grad_.emplace(out_features(), in_features());
    } else if (!enabled) {
      weight_grad_.reset();
    }
  }
  [[nodiscard]] std::optional<Matrix>& weight_grad() { return weight_grad_; }

  /// y (T x out) = x (T x in) W^T + b (+ adapter) (+ residual, like y, when
  /// not empty: the residual connection after the layer, joined in the same
  /// pass as the bias); a FoldableAdapter's ΔW joins W in the one GEMM.
  void forward(View y, ConstView x, Saved& saved, ConstView residual = {}) {
    B::linear(y, x, gemm_weight(), bias_.view(), residual);
    if (adds_adapter_output()) adapter_->forward(y, x, saved.adapter);
  }
  /// pre = forward(x), act = gelu(pre): with no adapter output to add in
  /// between, the backend's fused linear_gelu.
  void forward_gelu(View pre, View act, ConstView x, Saved& saved) {
    if (adds_adapter_output()) {
      forward(pre, x, saved);
      B::gelu_forward(act, pre);
    } else {
      B::linear_gelu(pre, act, x, gemm_weight(), bias_.view());
    }
  }

  /// dx (T x in) = dy W (+ adapter's), or dx += that with InputGrad::add;
  /// skipped if dx is empty. Adapter grads (and dW when enabled) accumulate.
  /// A folded adapter's ΔW is in the GEMM's W + ΔW, so it adds only its
  /// parameter grads.
  enum class InputGrad { assign, add };
  void backward(View dx, ConstView dy, ConstView x, const Saved& saved, InputGrad mode = InputGrad::assign) {
    const float beta = mode == InputGrad::add ? 1.0f : 0.0f;
    if (!dx.empty()) B::gemm(dx, dy, Op::N, gemm_weight(), Op::N, 1.0f, beta);
    if (weight_grad_) B::gemm(weight_grad_->view(), dy, Op::T, x, Op::N, 1.0f, 1.0f);
    if (adapter_) adapter_->backward(folds() ? View{} : dx, dy, x, saved.adapter);
  }

 private:
  /// Whether the forward adds an adapter's output after the GEMM (an attached adapter that does not fold).
  [[nodiscard]] bool adds_adapter_output() const { return adapter_.has_value() && !folds(); }
  [[nodiscard]] bool folds() const {
    if constexpr (FoldableAdapter<A>) {
      return adapter_.has_value();
    } else {
      return false;
    }
  }
  /// W, or W + ΔW of a folding adapter formed in the fold buffer.
  ConstView gemm_weight() {
    if constexpr (FoldableAdapter<A>) {
      if (adapter_) {
        const View folded = fold_buffer_.get().rows(out_features(), in_features());
        adapter_->fold_into(folded, weight_.view());
        return folded;
      }
    }
    return weight_.view();
  }

  A& checked_adapter() {
    check(adapter_.has_value(), name_, ": no adapter is attached to this site");
    return *adapter_;
  }

  std::string name_;
  Matrix weight_;
  Matrix bias_;
  std::optional<A> adapter_;
  std::optional<Matrix> weight_grad_;
  detail::SharedBuffer<FoldBuffer> fold_buffer_;
};

}  // namespace plora
