#pragma once
// Mean softmax cross-entropy over a batch of logits (torch.nn.CrossEntropyLoss
// with reduction "mean"), loss and logit gradient in one pass.
#include <cstdint>
#include <span>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"

namespace plora {

/// @tparam B  backend
template <Backend B>
class CrossEntropy {
 public:
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  /// Returns the mean loss of logits (batch, classes) against class ids
  /// `labels` (batch) and writes dlogits (batch, classes) = d(loss)/d(logits).
  /// Throws ShapeError for an empty batch and NumericError for NaN or Inf
  /// logits (a diverged model: the loss would be NaN, or finite by the clamp).
  float forward_backward(View dlogits, ConstView logits, std::span<const std::int32_t> labels) {
    check<ShapeError>(logits.rows > 0 && logits.cols > 0, "cross-entropy: empty logits (", logits.rows, " x ",
                      logits.cols, ")");
    check<NumericError>(B::all_finite(logits), "cross-entropy: the ", logits.rows, " x ", logits.cols,
                        " logits hold NaN or Inf");
    labels_ = B::make_indices(labels);
    return B::cross_entropy(dlogits, logits, labels_);
  }

 private:
  typename B::Indices labels_;  // kept alive for backends that run asynchronously
};

}  // namespace plora
