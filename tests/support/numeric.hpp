#pragma once
// Shared test helpers: seeded random host matrices, max-difference and
// relative-error measures, and central finite differences in double.
#include <algorithm>
#include <cmath>
#include <functional>

#include "plora/core/host_matrix.hpp"
#include "plora/core/rng.hpp"

namespace plora::test {

/// A (rows x cols) matrix of U(low, high) draws from stream (seed, stream).
inline HostMatrix random_matrix(Index rows, Index cols, std::uint64_t seed, float low = -1.0f, float high = 1.0f,
                                std::uint64_t stream = 0) {
  HostMatrix m(rows, cols);
  RandomStream rng(seed, stream);
  for (auto& v : m.values()) v = rng.uniform(low, high);
  return m;
}

/// NaN when any difference is NaN (std::max would drop it), so no bound holds.
inline double max_abs_diff(ConstHostView a, ConstHostView b) {
  double worst = 0.0;
  for (Index r = 0; r < a.rows; ++r)
    for (Index c = 0; c < a.cols; ++c) {
      const double difference = std::abs(double(a(r, c)) - double(b(r, c)));
      if (std::isnan(difference)) return difference;
      worst = std::max(worst, difference);
    }
  return worst;
}

/// NaN when any entry is NaN.
inline double max_abs(ConstHostView a) {
  double worst = 0.0;
  for (Index r = 0; r < a.rows; ++r)
    for (Index c = 0; c < a.cols; ++c) {
      const double magnitude = std::abs(double(a(r, c)));
      if (std::isnan(magnitude)) return magnitude;
      worst = std::max(worst, magnitude);
    }
  return worst;
}

/// max |a - b| / max(max |b|, floor): an error relative to the tensor's scale.
inline double relative_error(ConstHostView a, ConstHostView b, double floor = 1e-12) {
  return max_abs_diff(a, b) / std::max(max_abs(b), floor);
}

/// Central difference of scalar `loss` w.r.t. x(r, c) (perturbed in place and
/// restored). Step h in float; the truncation error is O(h^2) and the
/// rounding error O(eps_f * |loss| / h).
inline float central_difference(HostView x, Index r, Index c, const std::function<double()>& loss, float h) {
  const float saved = x(r, c);
  x(r, c) = saved + h;
  const double up = loss();
  x(r, c) = saved - h;
  const double down = loss();
  x(r, c) = saved;
  return static_cast<float>((up - down) / (2.0 * double(h)));
}

/// The finite-difference gradient of `loss` w.r.t. every entry of `x`.
inline HostMatrix finite_difference(HostView x, const std::function<double()>& loss, float h = 1e-2f) {
  HostMatrix grad(x.rows, x.cols);
  for (Index r = 0; r < x.rows; ++r)
    for (Index c = 0; c < x.cols; ++c) grad(r, c) = central_difference(x, r, c, loss, h);
  return grad;
}

/// A gradient at a sample of its entries: `analytic`'s values and the
/// finite differences there, each as one row.
struct SampledGradient {
  HostMatrix analytic;
  HostMatrix numeric;
};

/// `analytic` (the gradient of `loss` w.r.t. `x`, same shape) beside finite
/// differences at every `stride`-th entry in row-major order: a check of a
/// tensor too costly to difference whole (each entry costs two loss
/// evaluations). A stride of x.cols + 1 reaches every column and all but
/// one row in x.cols + 1.
inline SampledGradient sampled_finite_difference(HostView x, ConstHostView analytic,
                                                 const std::function<double()>& loss, Index stride,
                                                 float h = 1e-2f) {
  const Index count = (x.rows * x.cols + stride - 1) / stride;
  SampledGradient sample{HostMatrix(1, count), HostMatrix(1, count)};
  for (Index i = 0; i < count; ++i) {
    const Index r = i * stride / x.cols, c = i * stride % x.cols;
    sample.analytic(0, i) = analytic(r, c);
    sample.numeric(0, i) = central_difference(x, r, c, loss, h);
  }
  return sample;
}

/// sum(weights ⊙ y): a scalar whose gradient w.r.t. y is `weights`, used to
/// turn any output into a loss with a known upstream gradient.
inline double weighted_sum(ConstHostView y, ConstHostView weights) {
  double total = 0.0;
  for (Index r = 0; r < y.rows; ++r)
    for (Index c = 0; c < y.cols; ++c) total += double(y(r, c)) * double(weights(r, c));
  return total;
}

}  // namespace plora::test
