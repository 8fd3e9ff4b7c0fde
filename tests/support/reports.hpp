#pragma once
// A check shared by the extraction tests: two ratio reports' sites agree in
// every recorded field, floats bit-exactly.
#include <doctest/doctest.h>

#include <cstddef>

#include "plora/sparsity/report.hpp"

namespace plora::test {

inline void check_same_sites(const RatioReport& actual, const RatioReport& expected) {
  REQUIRE(actual.sites.size() == expected.sites.size());
  for (std::size_t i = 0; i < expected.sites.size(); ++i) {
    const SiteRatio &a = actual.sites[i], &b = expected.sites[i];
    INFO("site ", b.name);
    CHECK(a.name == b.name);
    CHECK(a.out_features == b.out_features);
    CHECK(a.in_features == b.in_features);
    CHECK(a.ratio == b.ratio);
    CHECK(a.outcome == b.outcome);
    CHECK(a.evaluations == b.evaluations);
    REQUIRE(a.probes.size() == b.probes.size());
    for (std::size_t p = 0; p < a.probes.size(); ++p) {
      CHECK(a.probes[p].q == b.probes[p].q);
      CHECK(a.probes[p].density == b.probes[p].density);
      CHECK(a.probes[p].metric == b.probes[p].metric);
    }
    CHECK(a.row_scores == b.row_scores);
    CHECK(a.col_scores == b.col_scores);
    CHECK(a.top_rows == b.top_rows);
    CHECK(a.top_cols == b.top_cols);
  }
}

}  // namespace plora::test
