#pragma once
// The IMP extractor (iterative magnitude pruning, METHOD.md §2; Frankle &
// Carbin, ICLR 2019): rounds that each prune `prune_fraction` of the remaining
// entries by magnitude, evaluating after each round; the last passing density
// is the ratio. Nothing is retrained between rounds, so the magnitude ranking
// never changes and round r keeps the top ceil((1 - prune_fraction)^r * entries)
// entries of |W|: the schedule 1, 0.8, 0.64, ... by default.
#include <cmath>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/models/concepts.hpp"
#include "plora/sparsity/entry_pruner.hpp"
#include "plora/sparsity/threshold_search.hpp"

namespace plora {

/// The IMP ratio extractor.
struct Imp {
  static constexpr std::string_view name = "imp";

  /// Fraction of the remaining entries each round removes, in (0, 1).
  double prune_fraction = 0.2;

  /// Rounds a schedule may have: each is one evaluation of the few-shot set
  /// per site (the default fraction takes 19 to reach 1/64).
  static constexpr double kMaxRounds = 1000;

  /// Keep-fractions (1 - prune_fraction)^r for r = 0, 1, ... while they stay
  /// at or above `resolution`, the smallest density the search considers.
  [[nodiscard]] std::vector<double> schedule(double resolution) const {
    check<ValueError>(prune_fraction > 0.0 && prune_fraction < 1.0, "IMP prune fraction ", prune_fraction,
                      " is outside (0, 1)");
    validate_resolution(resolution);
    // A fraction too small to shrink the density would never reach the resolution.
    const double rounds = std::log(resolution) / std::log1p(-prune_fraction);
    check<ValueError>(rounds <= kMaxRounds, "IMP prune fraction ", prune_fraction, " needs ", rounds,
                      " rounds to reach the resolution ", resolution, "; at most ", kMaxRounds, " are allowed");
    std::vector<double> out;
    for (int round = 0;; ++round) {
      const double q = std::pow(1.0 - prune_fraction, round);
      if (q < resolution) break;
      out.push_back(q);
    }
    return out;
  }

  template <Model M>
  [[nodiscard]] EntryPruner<typename M::BackendType> pruner(M& model, const std::string& site,
                                                            std::span<const typename M::Batch> /*shots*/) const {
    HostMatrix weight = to_host<typename M::BackendType>(model.site(site).weight());
    HostMatrix magnitude = weight;
    for (auto& v : magnitude.values()) v = std::abs(v);
    return {std::move(weight), std::move(magnitude), site};
  }

  template <class Metric>
  [[nodiscard]] SearchOutcome search(Metric&& metric, double target, double resolution) const {
    const std::vector<double> rounds = schedule(resolution);
    return scan_schedule(std::forward<Metric>(metric), target, rounds);
  }
};

}  // namespace plora
