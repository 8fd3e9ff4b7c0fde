#pragma once
// LayerNorm over the last dimension (biased variance, like torch.nn.LayerNorm).
// Frozen by default: backward then gives only the input gradient.
#include <string>
#include <utility>

#include "plora/backend/scratch.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/core/parameter.hpp"

namespace plora {

/// @tparam B  backend
template <Backend B>
class LayerNorm {
 public:
  using Matrix = typename B::Matrix;
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  LayerNorm() = default;
  /// @param gamma, beta (1 x features)  @param trainable  whether backward fills dgamma, dbeta
  LayerNorm(std::string name, Matrix gamma, Matrix beta, float eps, bool trainable = false)
      : name_(std::move(name)), gamma_(std::move(gamma)), beta_(std::move(beta)), eps_(eps) {
    const Index n = gamma_.view().cols;
    check<ShapeError>(gamma_.view().rows == 1 && n > 0, name_, ".weight: expected shape 1 x features, got ",
                      gamma_.view().rows, " x ", n);
    require_shape(beta_.view(), 1, n, name_ + ".bias");
    check<ValueError>(eps_ > 0.0f, name_, ": eps = ", eps_, " must be > 0");
    if (trainable) {
      dgamma_ = Matrix(1, n);
      dbeta_ = Matrix(1, n);
    }
  }

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] Index features() const { return gamma_.view().cols; }
  [[nodiscard]] float eps() const { return eps_; }
  [[nodiscard]] bool trainable() const { return !dgamma_.view().empty(); }

  /// y (rows, n) = (x - mean) / sqrt(var + eps) * gamma + beta; keeps (mean, rstd) per row.
  void forward(View y, ConstView x) {
    require_shape(x, x.rows, features(), name_ + " input");
    B::layernorm_forward(y, stats_.rows(x.rows, 2), x, gamma_.view(), beta_.view(), eps_);
  }

  /// dx (rows, n) from dy (rows, n) and the forward input x; dgamma, dbeta += when trainable.
  void backward(View dx, ConstView dy, ConstView x) {
    B::layernorm_backward(dx, dgamma_.view(), dbeta_.view(), dy, x, stats_.rows(x.rows), gamma_.view());
  }

  /// {"weight", "bias"} when trainable, else nothing.
  [[nodiscard]] ParameterList<typename B::Space> parameters() {
    if (!trainable()) return {};
    return {{"weight", gamma_.view(), dgamma_.view()}, {"bias", beta_.view(), dbeta_.view()}};
  }
  void zero_grad() {
    if (!trainable()) return;
    B::fill(dgamma_.view(), 0.0f);
    B::fill(dbeta_.view(), 0.0f);
  }
  [[nodiscard]] Index trainable_count() const { return trainable() ? 2 * features() : 0; }

  /// Exchanges the forward state (not the weights) with another LayerNorm.
  void swap_activations(LayerNorm& other) noexcept { std::swap(stats_, other.stats_); }

 private:
  std::string name_;
  Matrix gamma_;
  Matrix beta_;
  float eps_ = 1e-12f;
  Matrix dgamma_;  // empty when frozen
  Matrix dbeta_;
  detail::Scratch<B> stats_;  // (rows, 2): mean, rstd
};

}  // namespace plora
