#pragma once
// Mean softmax cross-entropy over a batch of logits (torch.nn.CrossEntropyLoss
// with reduction "mean"), loss and logit gradient in one pass.
#include <cstdint>
#include <span>

#include "plora/backend/concepts.hpp"

namespace plora {

/// @tparam B  backend
template <Backend B>
class CrossEntropy {
 public:
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  /// Returns the mean loss of logits (batch, classes) against class ids
  /// `labels` (batch) and writes dlogits (batch, classes) = d(loss)/d(logits).
  float forward_backward(View dlogits, ConstView logits, std::span<const std::int32_t> labels) {
    labels_ = B::make_indices(labels);
    return B::cross_entropy(dlogits, logits, labels_);
  }

 private:
  typename B::Indices labels_;  // kept alive for backends that run asynchronously
};

}  // namespace plora
