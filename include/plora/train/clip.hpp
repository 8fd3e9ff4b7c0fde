#pragma once
// Gradient clipping by global norm, torch.nn.utils.clip_grad_norm_ semantics.
#include <cmath>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/core/parameter.hpp"

namespace plora {

/// The L2 norm of all gradients of `params` taken together.
template <Backend B>
double grad_norm(const ParameterList<typename B::Space>& params) {
  double total = 0.0;
  for (const auto& param : params) total += B::sum_squares(param.grad);
  return std::sqrt(total);
}

/// Scales every gradient by max_norm / (total + 1e-6) when that is below 1;
/// returns the total norm before clipping.
/// @tparam B  backend holding the gradients
template <Backend B>
double clip_grad_norm(const ParameterList<typename B::Space>& params, double max_norm) {
  check<ValueError>(max_norm > 0.0, "clip_grad_norm: max_norm ", max_norm, " must be positive");
  const double total = grad_norm<B>(params);
  const double coef = max_norm / (total + 1e-6);
  if (coef < 1.0)
    for (const auto& param : params) B::scale(param.grad, static_cast<float>(coef));
  return total;
}

}  // namespace plora
