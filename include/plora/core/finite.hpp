#pragma once
// Finding the first NaN or Inf in host values, for checks that name it.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>

namespace plora {

/// Index of the first NaN or Inf in `values`, or values.size() when all are finite.
inline std::size_t first_non_finite(std::span<const float> values) {
  return static_cast<std::size_t>(std::find_if(values.begin(), values.end(), [](float v) { return !std::isfinite(v); }) -
                                  values.begin());
}

}  // namespace plora
