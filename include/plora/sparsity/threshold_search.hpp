#pragma once
// The one threshold search every ratio extractor shares (METHOD.md §2, step 3):
// the smallest keep-fraction q whose pruned model still scores
// metric(q) >= target = tau * M0. The metric is assumed monotone in q (our
// choice), so q is found by bisection over a grid of indices; IMP instead walks
// its geometric schedule from dense to sparse and stops at the first failure.
#include <algorithm>
#include <cmath>
#include <concepts>
#include <span>
#include <string_view>

#include "plora/core/error.hpp"
#include "plora/core/view.hpp"

namespace plora {

/// How a search ended. `ratio` is the keep-fraction q found (not yet mapped to
/// the extractor's actual density, e.g. SVD's k / rank).
struct SearchOutcome {
  enum Kind {
    Found,         ///< a failing q lies below the returned passing q
    AlwaysPasses,  ///< even the smallest q considered passes
    NeverPasses,   ///< even q = 1 fails; ratio is 1
  };
  double ratio = 1.0;
  Kind kind = NeverPasses;
  int evaluations = 0;  ///< calls of the metric
};

/// "found", "always_passes", "never_passes" (the names ratios.json uses).
inline std::string_view outcome_name(SearchOutcome::Kind kind) {
  switch (kind) {
    case SearchOutcome::Found: return "found";
    case SearchOutcome::AlwaysPasses: return "always_passes";
    case SearchOutcome::NeverPasses: return "never_passes";
  }
  return "unknown";
}

inline SearchOutcome::Kind parse_outcome(std::string_view name) {
  for (const auto kind : {SearchOutcome::Found, SearchOutcome::AlwaysPasses, SearchOutcome::NeverPasses})
    if (outcome_name(kind) == name) return kind;
  throw ValueError(detail::concat("unknown search outcome '", name,
                                  "'; expected found, always_passes or never_passes"));
}

/// Throws ValueError unless tau is in (0, 1].
inline void validate_tau(double tau) {
  check<ValueError>(tau > 0.0 && tau <= 1.0, "threshold tau ", tau, " is outside (0, 1]");
}

/// The finest grid step: 1e-8 is below one entry of any weight up to 10^8
/// entries, and keeps the grid's 1 / resolution points countable in an int.
inline constexpr double kFinestResolution = 1e-8;

/// Throws ValueError unless the grid resolution is in [kFinestResolution, 1).
inline void validate_resolution(double resolution) {
  check<ValueError>(resolution >= kFinestResolution && resolution < 1.0, "search resolution ", resolution,
                    " is outside [", kFinestResolution, ", 1)");
}

/// Number of points of the grid q_i = min(1, i * resolution), i = 1..n, whose
/// last point is 1. A resolution that divides 1 up to rounding (1/64, 0.1) gives
/// exactly 1 / resolution points.
inline int grid_points(double resolution) {
  validate_resolution(resolution);
  return static_cast<int>(std::ceil(1.0 / resolution - 1e-9));
}

/// The i-th grid point (1-based), i * resolution clamped to 1.
inline double grid_value(int index, double resolution) {
  return index >= grid_points(resolution) ? 1.0 : static_cast<double>(index) * resolution;
}

/// k = ceil(q * n) clamped to [1, n]: how many of n units (singular triplets,
/// entries) keep-fraction q keeps. The 1e-9 slack stops a grid point such as
/// 3 * 0.1 = 0.30000000000000004 from rounding 30 * q up to 10.
inline Index ceil_count(double q, Index n) {
  const auto k = static_cast<Index>(std::ceil(q * static_cast<double>(n) - 1e-9));
  return std::clamp<Index>(k, 1, n);
}

/// Smallest q on the grid {min(1, i * resolution)} with metric(q) >= target,
/// by bisection over grid indices: q = 1 is tried first (NeverPasses if it
/// fails), then the smallest q (AlwaysPasses if it passes), then about
/// log2(1 / resolution) midpoints.
/// @tparam Metric  callable double(double q), assumed non-decreasing in q
template <std::invocable<double> Metric>
SearchOutcome bisect_threshold(Metric&& metric, double target, double resolution) {
  const int points = grid_points(resolution);
  SearchOutcome outcome;
  auto passes = [&](int index) {
    ++outcome.evaluations;
    return static_cast<double>(metric(grid_value(index, resolution))) >= target;
  };
  if (!passes(points)) return {1.0, SearchOutcome::NeverPasses, outcome.evaluations};
  if (points == 1 || passes(1)) return {grid_value(1, resolution), SearchOutcome::AlwaysPasses, outcome.evaluations};
  int failing = 1, passing = points;  // invariant: metric fails at `failing`, passes at `passing`
  while (passing - failing > 1) {
    const int middle = failing + (passing - failing) / 2;
    if (passes(middle)) {
      passing = middle;
    } else {
      failing = middle;
    }
  }
  return {grid_value(passing, resolution), SearchOutcome::Found, outcome.evaluations};
}

/// Walks `schedule` (keep-fractions, strictly decreasing, starting at 1) and
/// returns the last q with metric(q) >= target before the first failure:
/// NeverPasses if schedule[0] fails, AlwaysPasses if every entry passes.
/// @tparam Metric  callable double(double q)
template <std::invocable<double> Metric>
SearchOutcome scan_schedule(Metric&& metric, double target, std::span<const double> schedule) {
  check<ValueError>(!schedule.empty() && schedule.front() == 1.0, "a pruning schedule must start at density 1");
  SearchOutcome outcome;
  for (std::size_t i = 0; i < schedule.size(); ++i) {
    check<ValueError>(i == 0 || (schedule[i] > 0.0 && schedule[i] < schedule[i - 1]), "pruning schedule entry ", i,
                      " (", schedule[i], ") must be positive and below the previous one");
    ++outcome.evaluations;
    if (static_cast<double>(metric(schedule[i])) < target) {
      if (i == 0) return {1.0, SearchOutcome::NeverPasses, outcome.evaluations};
      return {schedule[i - 1], SearchOutcome::Found, outcome.evaluations};
    }
  }
  return {schedule.back(), SearchOutcome::AlwaysPasses, outcome.evaluations};
}

}  // namespace plora
