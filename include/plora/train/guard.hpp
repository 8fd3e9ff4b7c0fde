#pragma once
// Stops training at the first NaN or Inf in the loss or a gradient, naming the
// step and the parameter, instead of letting it spread into the weights.
#include <cmath>
#include <string_view>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/core/parameter.hpp"

namespace plora {

/// Throws NumericError unless `loss` and every gradient of `params` are finite;
/// `when` (e.g. " after the on_gradients hooks") ends the message.
/// @tparam B  backend holding the gradients
template <Backend B>
void check_finite(float loss, const ParameterList<typename B::Space>& params, Index step,
                  std::string_view when = "") {
  check<NumericError>(std::isfinite(loss), "step ", step, ": the loss is ", loss, when);
  for (const auto& param : params)
    check<NumericError>(B::all_finite(param.grad), "step ", step, ": the gradient of parameter '", param.name,
                        "' contains NaN or Inf", when);
}

}  // namespace plora
