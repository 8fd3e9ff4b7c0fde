// The shared threshold search: bisection over the q grid and IMP's schedule scan.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "plora/sparsity/threshold_search.hpp"

using namespace plora;

TEST_CASE("bisection returns the smallest passing grid point of every step metric") {
  const double step = 1.0 / 64.0;
  // metric(q) = 1 from grid index t on, 0 below: every threshold position 2..64.
  for (int t = 2; t <= 64; ++t) {
    const double threshold = t * step;
    const auto outcome = bisect_threshold([&](double q) { return q >= threshold - 1e-12 ? 1.0 : 0.0; }, 0.9, step);
    CHECK(outcome.kind == SearchOutcome::Found);
    CHECK(outcome.ratio == doctest::Approx(threshold).epsilon(1e-12));
    // q = 1, q = 1/64, then ceil(log2(63)) = 6 midpoints at most.
    CHECK(outcome.evaluations <= 8);
  }
}

TEST_CASE("bisection on a continuous monotone metric") {
  // metric(q) = q; target 0.3: the smallest grid q >= 0.3 is 20/64 = 0.3125.
  int calls = 0;
  const auto outcome = bisect_threshold(
      [&](double q) {
        ++calls;
        return q;
      },
      0.3, 1.0 / 64.0);
  CHECK(outcome.kind == SearchOutcome::Found);
  CHECK(outcome.ratio == 20.0 / 64.0);
  CHECK(outcome.evaluations == calls);
}

TEST_CASE("always-passing and never-passing metrics have explicit outcomes") {
  std::vector<double> asked;
  const auto always = bisect_threshold(
      [&](double q) {
        asked.push_back(q);
        return 1.0;
      },
      0.9, 0.25);
  CHECK(always.kind == SearchOutcome::AlwaysPasses);
  CHECK(always.ratio == 0.25);
  CHECK(always.evaluations == 2);
  CHECK(asked == std::vector<double>{1.0, 0.25});

  const auto never = bisect_threshold([](double) { return 0.5; }, 0.9, 0.25);
  CHECK(never.kind == SearchOutcome::NeverPasses);
  CHECK(never.ratio == 1.0);
  CHECK(never.evaluations == 1);
}

TEST_CASE("a resolution that does not divide 1 ends the grid at q = 1") {
  CHECK(grid_points(0.3) == 4);  // 0.3, 0.6, 0.9, 1.0
  CHECK(grid_value(3, 0.3) == doctest::Approx(0.9));
  CHECK(grid_value(4, 0.3) == 1.0);
  const auto outcome = bisect_threshold([](double q) { return q; }, 0.95, 0.3);
  CHECK(outcome.kind == SearchOutcome::Found);
  CHECK(outcome.ratio == 1.0);
  CHECK(grid_points(1.0 / 64.0) == 64);
  CHECK(grid_points(0.1) == 10);
}

TEST_CASE("ceil_count is ceil(q n) without representation round-up, clamped to [1, n]") {
  CHECK(ceil_count(3 * 0.1, 10) == 3);  // 3 * 0.1 = 0.30000000000000004
  CHECK(ceil_count(13.0 / 64.0, 16) == 4);
  CHECK(ceil_count(12.0 / 64.0, 16) == 3);
  CHECK(ceil_count(1e-6, 16) == 1);
  CHECK(ceil_count(1.0, 16) == 16);
}

TEST_CASE("bad resolutions and taus are rejected") {
  const auto metric = [](double q) { return q; };
  CHECK_THROWS_AS(bisect_threshold(metric, 0.5, 0.0), ValueError);
  CHECK_THROWS_AS(bisect_threshold(metric, 0.5, 1.0), ValueError);
  CHECK_THROWS_AS(bisect_threshold(metric, 0.5, -0.1), ValueError);
  // Finer than 1e-8 the grid's point count would overflow an int (it did below ~4.7e-10).
  CHECK_THROWS_WITH_AS(bisect_threshold(metric, 0.5, 1e-10), doctest::Contains("search resolution 1e-10 is outside [1e-08, 1)"),
                       ValueError);
  CHECK(bisect_threshold(metric, 0.5, kFinestResolution).kind == SearchOutcome::Found);
  CHECK_THROWS_AS(validate_tau(0.0), ValueError);
  CHECK_THROWS_AS(validate_tau(1.01), ValueError);
  CHECK_NOTHROW(validate_tau(1.0));
}

TEST_CASE("schedule scan stops at the first failure and reports the last pass") {
  const std::vector<double> schedule{1.0, 0.8, 0.64, 0.512};
  std::vector<double> asked;
  const auto found = scan_schedule(
      [&](double q) {
        asked.push_back(q);
        return q >= 0.6 ? 1.0 : 0.0;
      },
      0.5, schedule);
  CHECK(found.kind == SearchOutcome::Found);
  CHECK(found.ratio == 0.64);
  CHECK(found.evaluations == 4);
  CHECK(asked == schedule);

  const auto always = scan_schedule([](double) { return 1.0; }, 0.5, schedule);
  CHECK(always.kind == SearchOutcome::AlwaysPasses);
  CHECK(always.ratio == 0.512);
  const auto never = scan_schedule([](double) { return 0.0; }, 0.5, schedule);
  CHECK(never.kind == SearchOutcome::NeverPasses);
  CHECK(never.ratio == 1.0);
  CHECK(never.evaluations == 1);

  const auto metric = [](double) { return 1.0; };
  CHECK_THROWS_AS(scan_schedule(metric, 0.5, std::vector<double>{0.8, 0.5}), ValueError);
  CHECK_THROWS_AS(scan_schedule(metric, 0.5, std::vector<double>{1.0, 0.5, 0.7}), ValueError);
  CHECK_THROWS_AS(scan_schedule(metric, 0.5, std::vector<double>{}), ValueError);
}

TEST_CASE("outcome names round-trip") {
  for (const auto kind : {SearchOutcome::Found, SearchOutcome::AlwaysPasses, SearchOutcome::NeverPasses})
    CHECK(parse_outcome(outcome_name(kind)) == kind);
  CHECK_THROWS_AS(parse_outcome("maybe"), ValueError);
}
