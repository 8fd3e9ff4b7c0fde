#pragma once
// Constructed models whose winning tickets are known in advance.
#include <cmath>
#include <cstdint>
#include <vector>

#include "sparsity/tiny_model.hpp"
#include "support/numeric.hpp"

namespace plora::test {

/// n orthonormal columns of length n (Gram-Schmidt in double on random vectors).
inline std::vector<std::vector<double>> orthonormal_basis(Index n, std::uint64_t seed) {
  const HostMatrix raw = random_matrix(n, n, seed);
  std::vector<std::vector<double>> basis;
  for (Index c = 0; c < n; ++c) {
    std::vector<double> v(static_cast<std::size_t>(n));
    for (Index r = 0; r < n; ++r) v[static_cast<std::size_t>(r)] = raw(r, c);
    for (const auto& b : basis) {
      double dot = 0.0;
      for (std::size_t i = 0; i < v.size(); ++i) dot += v[i] * b[i];
      for (std::size_t i = 0; i < v.size(); ++i) v[i] -= dot * b[i];
    }
    double norm = 0.0;
    for (const double x : v) norm += x * x;
    for (double& x : v) x /= std::sqrt(norm);
    basis.push_back(std::move(v));
  }
  return basis;
}

/// The rank-k problem: W = sum_{c < k} sigma_c u_c v_c^T (n x n, exactly rank
/// k), head row c = u_c^T, so logit_c = sigma_c v_c . x and the label of x is
/// argmax_c sigma_c v_c . x. Keeping k singular triplets of W keeps every
/// prediction; dropping the smallest removes the class k - 1 from the argmax.
struct RankProblem {
  static constexpr Index n = 16;
  static constexpr Index k = 4;
  static constexpr double sigma[k] = {1.3, 1.2, 1.1, 1.0};
  std::vector<std::vector<double>> u = orthonormal_basis(n, 101);
  std::vector<std::vector<double>> v = orthonormal_basis(n, 202);

  /// sum_{c < keep} sigma_c u_c v_c^T
  [[nodiscard]] HostMatrix weight(Index keep = k) const {
    HostMatrix w(n, n);
    for (Index r = 0; r < n; ++r)
      for (Index c = 0; c < n; ++c) {
        double sum = 0.0;
        for (Index t = 0; t < keep; ++t) sum += sigma[t] * u[std::size_t(t)][std::size_t(r)] * v[std::size_t(t)][std::size_t(c)];
        w(r, c) = static_cast<float>(sum);
      }
    return w;
  }
  [[nodiscard]] HostMatrix head() const {
    HostMatrix h(k, n);
    for (Index c = 0; c < k; ++c)
      for (Index i = 0; i < n; ++i) h(c, i) = static_cast<float>(u[std::size_t(c)][std::size_t(i)]);
    return h;
  }
  /// (samples x n) uniform inputs and their labels, computed in double.
  [[nodiscard]] std::pair<HostMatrix, std::vector<std::int32_t>> data(Index samples, std::uint64_t seed) const {
    HostMatrix x = random_matrix(samples, n, seed);
    std::vector<std::int32_t> labels;
    for (Index s = 0; s < samples; ++s) {
      std::int32_t best = 0;
      double best_logit = -1e300;
      for (Index c = 0; c < k; ++c) {
        double dot = 0.0;
        for (Index i = 0; i < n; ++i) dot += v[std::size_t(c)][std::size_t(i)] * x(s, i);
        if (sigma[c] * dot > best_logit) {
          best_logit = sigma[c] * dot;
          best = static_cast<std::int32_t>(c);
        }
      }
      labels.push_back(best);
    }
    return {std::move(x), std::move(labels)};
  }

  /// One site "layer.0.query" holding W.
  [[nodiscard]] TinyModel one_site_model() const {
    return TinyModel({{"layer.0.query", weight()}}, head(), HostMatrix(1, k));
  }

  /// W followed by a random orthogonal R ("layer.0.value"), head U_k^T R^T, so
  /// the logits are those of the one-site model.
  [[nodiscard]] TinyModel two_site_model() const {
    const auto r = orthonormal_basis(n, 303);
    HostMatrix rotation(n, n), head_r(k, n);
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j) rotation(i, j) = static_cast<float>(r[std::size_t(j)][std::size_t(i)]);
    for (Index c = 0; c < k; ++c)
      for (Index i = 0; i < n; ++i) {
        double sum = 0.0;  // (R u_c)_i
        for (Index j = 0; j < n; ++j) sum += double(rotation(i, j)) * u[std::size_t(c)][std::size_t(j)];
        head_r(c, i) = static_cast<float>(sum);
      }
    return TinyModel({{"layer.0.query", weight()}, {"layer.0.value", std::move(rotation)}}, std::move(head_r),
                     HostMatrix(1, k));
  }
};

}  // namespace plora::test
