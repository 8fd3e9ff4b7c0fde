#pragma once
// Stops training at the first NaN or Inf in the loss or a gradient, naming the
// step and the parameter, instead of letting it spread into the weights.
#include <cmath>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/core/parameter.hpp"

namespace plora {

/// Throws NumericError unless `loss` and every gradient of `params` are finite.
/// @tparam B  backend holding the gradients
template <Backend B>
void check_finite(float loss, const ParameterList<typename B::Space>& params, Index step) {
  check<NumericError>(std::isfinite(loss), "step ", step, ": the loss is ", loss);
  for (const auto& param : params)
    check<NumericError>(B::all_finite(param.grad), "step ", step, ": the gradient of parameter '", param.name,
                        "' contains NaN or Inf");
}

}  // namespace plora
