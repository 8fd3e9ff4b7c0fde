#pragma once
// A fully trained linear layer y = x W^T + b (weight and bias with gradients),
// e.g. a classification head that PEFT lists in modules_to_save.
#include <string>
#include <utility>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/core/parameter.hpp"

namespace plora {

/// @tparam B  backend
template <Backend B>
class TrainableLinear {
 public:
  using Matrix = typename B::Matrix;
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  TrainableLinear() = default;
  /// @param weight (out x in)  @param bias (1 x out)
  TrainableLinear(std::string name, Matrix weight, Matrix bias)
      : name_(std::move(name)), weight_(std::move(weight)), bias_(std::move(bias)),
        dweight_(weight_.view().rows, weight_.view().cols), dbias_(1, weight_.view().rows) {
    require_shape(bias_.view(), 1, out_features(), name_ + ".bias");
  }

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] Index in_features() const { return weight_.view().cols; }
  [[nodiscard]] Index out_features() const { return weight_.view().rows; }
  [[nodiscard]] View weight() { return weight_.view(); }
  [[nodiscard]] View bias() { return bias_.view(); }
  [[nodiscard]] ConstView weight_grad() const { return dweight_.view(); }
  [[nodiscard]] ConstView bias_grad() const { return dbias_.view(); }

  /// y (rows, out) = x (rows, in) W^T + b
  void forward(View y, ConstView x) {
    B::gemm(y, x, Op::N, weight_.view(), Op::T, 1.0f, 0.0f);
    B::add_row_vector(y, bias_.view());
  }

  /// dW += dy^T x; db += column sums of dy; dx = dy W unless dx is empty.
  void backward(View dx, ConstView dy, ConstView x) {
    B::gemm(dweight_.view(), dy, Op::T, x, Op::N, 1.0f, 1.0f);  // (out, rows) (rows, in)
    B::column_sums(dbias_.view(), dy, 1.0f);
    if (!dx.empty()) B::gemm(dx, dy, Op::N, weight_.view(), Op::N, 1.0f, 0.0f);  // (rows, out) (out, in)
  }

  /// {"weight", "bias"}
  [[nodiscard]] ParameterList<typename B::Space> parameters() {
    return {{"weight", weight_.view(), dweight_.view()}, {"bias", bias_.view(), dbias_.view()}};
  }
  void zero_grad() {
    B::fill(dweight_.view(), 0.0f);
    B::fill(dbias_.view(), 0.0f);
  }
  [[nodiscard]] Index trainable_count() const { return out_features() * (in_features() + 1); }

 private:
  std::string name_;
  Matrix weight_;
  Matrix bias_;
  Matrix dweight_;
  Matrix dbias_;
};

}  // namespace plora
