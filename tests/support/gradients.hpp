#pragma once
// A check shared by the model tests: two runs of one model produced the same
// trainable gradients.
#include <doctest/doctest.h>

#include <cstddef>

#include "plora/core/parameter.hpp"
#include "support/numeric.hpp"

namespace plora::test {

/// Same parameter names in the same order, every gradient non-zero, and each
/// within `tolerance` relative error of the other run's.
inline void check_same_gradients(const ParameterList<Host>& actual, const ParameterList<Host>& expected,
                                 double tolerance) {
  REQUIRE(actual.size() == expected.size());
  for (std::size_t i = 0; i < actual.size(); ++i) {
    INFO("gradient of ", expected[i].name);
    CHECK(actual[i].name == expected[i].name);
    CHECK(max_abs(expected[i].grad) > 0.0);
    CHECK(relative_error(actual[i].grad, expected[i].grad) <= tolerance);
  }
}

}  // namespace plora::test
