// Mask policies: kept fractions, determinism, never-empty sets, targeted and
// stochastic selection, validation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "plora/core/rng.hpp"
#include "plora/masks/masks.hpp"

using namespace plora;

namespace {
bool sorted_unique_in_range(const std::vector<std::int32_t>& ids, Index bound) {
  if (ids.empty()) return false;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= bound) return false;
    if (i > 0 && ids[i] <= ids[i - 1]) return false;
  }
  return true;
}

/// Five binomial standard deviations of a kept fraction: the count of n i.i.d.
/// Bernoulli(p) draws has variance n p (1 - p), so the fraction has sigma
/// sqrt(p (1 - p) / n). A false failure at 5 sigma has probability ~6e-7.
double five_sigma(double p, Index n) { return 5.0 * std::sqrt(p * (1.0 - p) / static_cast<double>(n)); }

double fraction(const std::vector<std::int32_t>& ids, Index n) {
  return static_cast<double>(ids.size()) / static_cast<double>(n);
}
}  // namespace

TEST_CASE("balanced Bernoulli masks keep sqrt(ratio) of rows and of columns") {
  const Index out = 20000, in = 30000;
  const double ratio = 0.09;  // P(row) = P(col) = 0.3
  const RowColMask mask = PartialMask{}.sample({.out = out, .in = in, .ratio = ratio, .seed = 5, .stream = 11});
  CHECK(sorted_unique_in_range(mask.rows, out));
  CHECK(sorted_unique_in_range(mask.cols, in));
  CHECK(std::abs(fraction(mask.rows, out) - 0.3) < five_sigma(0.3, out));
  CHECK(std::abs(fraction(mask.cols, in) - 0.3) < five_sigma(0.3, in));
}

TEST_CASE("rows-only and columns-only splits put the whole ratio on one side") {
  const Index out = 20000, in = 10000;
  const MaskRequest request{.out = out, .in = in, .ratio = 0.2, .seed = 1, .stream = 2};
  const RowColMask rows_only = Bernoulli<RowsOnly>{}.sample(request);
  CHECK(std::abs(fraction(rows_only.rows, out) - 0.2) < five_sigma(0.2, out));
  CHECK(static_cast<Index>(rows_only.cols.size()) == in);
  const RowColMask cols_only = Bernoulli<ColsOnly>{}.sample(request);
  CHECK(static_cast<Index>(cols_only.rows.size()) == out);
  CHECK(std::abs(fraction(cols_only.cols, in) - 0.2) < five_sigma(0.2, in));
}

TEST_CASE("row i uses draw i and column j draw out + j of the request's stream") {
  const MaskRequest request{.out = 50, .in = 70, .ratio = 0.25, .seed = 9, .stream = 3};
  const RowColMask mask = PartialMask{}.sample(request);
  std::vector<std::int32_t> rows, cols;
  for (std::int32_t i = 0; i < 50; ++i)
    if (RandomStream::uniform_at(9, 3, static_cast<std::uint64_t>(i)) < 0.5f) rows.push_back(i);
  for (std::int32_t j = 0; j < 70; ++j)
    if (RandomStream::uniform_at(9, 3, static_cast<std::uint64_t>(50 + j)) < 0.5f) cols.push_back(j);
  CHECK(mask.rows == rows);
  CHECK(mask.cols == cols);
}

TEST_CASE("masks depend only on (seed, stream)") {
  const MaskRequest request{.out = 300, .in = 200, .ratio = 0.3, .seed = 7, .stream = stream_id("layer.0.query")};
  const RowColMask a = PartialMask{}.sample(request), b = PartialMask{}.sample(request);
  CHECK(a.rows == b.rows);
  CHECK(a.cols == b.cols);
  MaskRequest other_stream = request;
  other_stream.stream = stream_id("layer.0.value");
  const RowColMask c = PartialMask{}.sample(other_stream);
  CHECK(c.rows != a.rows);
  CHECK(c.cols != a.cols);
  MaskRequest other_seed = request;
  other_seed.seed = 8;
  CHECK(PartialMask{}.sample(other_seed).rows != a.rows);
}

TEST_CASE("a tiny ratio still keeps the row and the column with the smallest draw") {
  const Index out = 40, in = 30;
  const RowColMask mask = PartialMask{}.sample({.out = out, .in = in, .ratio = 1e-12, .seed = 3, .stream = 4});
  REQUIRE(mask.rows.size() == 1);
  REQUIRE(mask.cols.size() == 1);
  const auto argmin = [](std::uint64_t first, Index n) {
    std::int32_t best = 0;
    for (std::int32_t i = 1; i < n; ++i)
      if (RandomStream::uniform_at(3, 4, first + static_cast<std::uint64_t>(i)) <
          RandomStream::uniform_at(3, 4, first + static_cast<std::uint64_t>(best)))
        best = i;
    return best;
  };
  CHECK(mask.rows[0] == argmin(0, out));
  CHECK(mask.cols[0] == argmin(static_cast<std::uint64_t>(out), in));
  // A 1 x 1 layer at any ratio keeps its only entry.
  const RowColMask one = PartialMask{}.sample({.out = 1, .in = 1, .ratio = 1e-6, .seed = 0, .stream = 0});
  CHECK(one.rows == std::vector<std::int32_t>{0});
  CHECK(one.cols == std::vector<std::int32_t>{0});
}

TEST_CASE("ratio 1 keeps everything") {
  const RowColMask mask = PartialMask{}.sample({.out = 13, .in = 17, .ratio = 1.0, .seed = 2, .stream = 2});
  CHECK(mask.rows.size() == 13);
  CHECK(mask.cols.size() == 17);
}

TEST_CASE("targeted masks keep the top round(P n) scored rows and columns") {
  // out = 10, in = 8, ratio 0.25: P = 0.5, k_rows = 5, k_cols = 4.
  const std::vector<float> row_scores{0.1f, 9.0f, 0.3f, 7.0f, 0.2f, 8.0f, 0.0f, 6.0f, 0.5f, 5.0f};
  const std::vector<float> col_scores{-1.0f, 3.0f, 3.0f, 0.0f, 2.0f, 3.0f, 1.0f, 4.0f};
  const RowColMask mask = TargetedMask{}.sample(
      {.out = 10, .in = 8, .ratio = 0.25, .row_scores = row_scores, .col_scores = col_scores, .seed = 0, .stream = 0});
  CHECK(mask.rows == std::vector<std::int32_t>{1, 3, 5, 7, 9});
  // Top four columns are 7 (4.0) and the three tied at 3.0: 1, 2, 5.
  CHECK(mask.cols == std::vector<std::int32_t>{1, 2, 5, 7});
  // k = round(0.375 * 8) = 3 cuts through the three-way tie at 3.0: lower indices win.
  const RowColMask three = Targeted<ColsOnly>{}.sample({.out = 10, .in = 8, .ratio = 0.375, .col_scores = col_scores});
  CHECK(three.cols == std::vector<std::int32_t>{1, 2, 7});
  CHECK(three.rows.size() == 10);  // rows kept in full need no scores
}

TEST_CASE("targeted masks need scores for a side they subsample") {
  const std::vector<float> rows(6, 1.0f), short_cols(3, 1.0f);
  CHECK_THROWS_AS((void)TargetedMask{}.sample({.out = 6, .in = 4, .ratio = 0.25, .row_scores = rows}), ValueError);
  CHECK_THROWS_WITH_AS(
      (void)TargetedMask{}.sample(
          {.out = 6, .in = 4, .ratio = 0.25, .row_scores = rows, .col_scores = short_cols, .site = "blk.q"}),
      doctest::Contains("blk.q"), ShapeError);
  const std::vector<float> nan_rows{1.0f, NAN, 1.0f, 1.0f, 1.0f, 1.0f};
  CHECK_THROWS_AS((void)Targeted<RowsOnly>{}.sample({.out = 6, .in = 4, .ratio = 0.5, .row_scores = nan_rows}),
                  ValueError);
}

TEST_CASE("stochastic-targeted picks follow the score proportions") {
  // One row of four (RowsOnly, ratio 0.25 -> k = 1) per stream: P(i) = w_i / sum w.
  const std::vector<float> scores{1.0f, 2.0f, 3.0f, 4.0f};
  const int trials = 20000;
  std::vector<int> hits(4, 0);
  for (int t = 0; t < trials; ++t) {
    const RowColMask mask = StochasticTargeted<RowsOnly>{}.sample(
        {.out = 4, .in = 3, .ratio = 0.25, .row_scores = scores, .seed = 17, .stream = static_cast<std::uint64_t>(t)});
    REQUIRE(mask.rows.size() == 1);
    ++hits[static_cast<std::size_t>(mask.rows[0])];
  }
  for (std::size_t i = 0; i < 4; ++i) {
    const double p = scores[i] / 10.0;
    CHECK(std::abs(hits[i] / double(trials) - p) < five_sigma(p, trials));
  }
}

TEST_CASE("stochastic-targeted sampling is without replacement and proportional per draw") {
  // Two of three columns with weights (1, 1, 2): the pair {0, 1} needs a light
  // column first (1/4 each) and then the other light one among weights (1, 2)
  // (1/3): P = 2 * 1/4 * 1/3 = 1/6. With replacement or without the
  // renormalisation the probability would differ.
  const std::vector<float> scores{1.0f, 1.0f, 2.0f};
  const int trials = 20000;
  int light_pair = 0;
  for (int t = 0; t < trials; ++t) {
    const RowColMask mask = StochasticTargeted<ColsOnly>{}.sample({.out = 2,
                                                                   .in = 3,
                                                                   .ratio = 2.0 / 3.0,
                                                                   .col_scores = scores,
                                                                   .seed = 4,
                                                                   .stream = static_cast<std::uint64_t>(t)});
    REQUIRE(mask.cols.size() == 2);
    REQUIRE(mask.cols[0] != mask.cols[1]);
    if (mask.cols == std::vector<std::int32_t>{0, 1}) ++light_pair;
  }
  CHECK(std::abs(light_pair / double(trials) - 1.0 / 6.0) < five_sigma(1.0 / 6.0, trials));
}

TEST_CASE("stochastic-targeted: zero scores come last, negative scores are refused, seeds reproduce") {
  const std::vector<float> scores{0.0f, 5.0f, 0.0f, 1.0f, 0.0f, 2.0f};
  const MaskRequest request{.out = 6, .in = 2, .ratio = 0.5, .row_scores = scores, .seed = 1, .stream = 1};
  const RowColMask mask = StochasticTargeted<RowsOnly>{}.sample(request);
  CHECK(mask.rows == std::vector<std::int32_t>{1, 3, 5});
  // Fewer positive scores than kept rows: every positive one is kept and the
  // rest are drawn among the zeros, not always the lowest indices.
  std::vector<float> two_positive(40, 0.0f);
  two_positive[7] = 1.0f;
  two_positive[30] = 3.0f;
  std::set<std::int32_t> fillers;
  for (std::uint64_t seed = 0; seed < 8; ++seed) {
    const RowColMask few = StochasticTargeted<RowsOnly>{}.sample(
        {.out = 40, .in = 2, .ratio = 0.25, .row_scores = two_positive, .seed = seed, .stream = 3});
    REQUIRE(few.rows.size() == 10);
    CHECK(std::ranges::count(few.rows, 7) == 1);
    CHECK(std::ranges::count(few.rows, 30) == 1);
    for (const std::int32_t row : few.rows)
      if (row != 7 && row != 30) fillers.insert(row);
  }
  // 8 draws of 8 fillers among 38 zeros: all 64 within the lowest 9 has probability below 1e-30.
  CHECK(*fillers.rbegin() > 9);
  const std::vector<float> many(100, 1.0f);
  const MaskRequest big{.out = 100, .in = 2, .ratio = 0.3, .row_scores = many, .seed = 2, .stream = 9};
  CHECK(StochasticTargeted<RowsOnly>{}.sample(big).rows == StochasticTargeted<RowsOnly>{}.sample(big).rows);
  const std::vector<float> negative{1.0f, -1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
  CHECK_THROWS_AS(
      (void)StochasticTargeted<RowsOnly>{}.sample({.out = 6, .in = 2, .ratio = 0.5, .row_scores = negative}),
      ValueError);
}

TEST_CASE("invalid requests throw errors that name the weight") {
  const PartialMask mask;
  for (const double ratio : {0.0, -0.5, 1.5, double(NAN)})
    CHECK_THROWS_WITH_AS((void)mask.sample({.out = 4, .in = 4, .ratio = ratio, .site = "enc.0.value"}),
                         doctest::Contains("enc.0.value"), ValueError);
  CHECK_THROWS_AS((void)mask.sample({.out = 0, .in = 4, .ratio = 0.5}), ShapeError);
  CHECK_THROWS_AS((void)mask.sample({.out = 4, .in = -1, .ratio = 0.5}), ShapeError);
  const std::vector<float> wrong(5, 1.0f);
  CHECK_THROWS_AS((void)mask.sample({.out = 4, .in = 4, .ratio = 0.5, .row_scores = wrong}), ShapeError);
}

TEST_CASE("uniform ratios: the mean of the derived ratios or a given value") {
  const std::map<std::string, double> derived{{"a.query", 0.1}, {"a.value", 0.3}, {"b.query", 0.5}};
  const auto mean = uniform_ratios(derived);
  REQUIRE(mean.size() == 3);
  for (const auto& [site, ratio] : mean) CHECK(ratio == doctest::Approx(0.3).epsilon(1e-15));
  const auto given = uniform_ratios(derived, 0.05);
  CHECK(given.at("a.value") == 0.05);
  CHECK_THROWS_AS(uniform_ratios({}), ValueError);
  CHECK_THROWS_AS(uniform_ratios(derived, 1.2), ValueError);
  CHECK_THROWS_WITH_AS(uniform_ratios({{"c.key", 0.0}}), doctest::Contains("c.key"), ValueError);
}

TEST_CASE("Bernoulli element masks keep a density of flat indices") {
  const Index rows = 300, cols = 200;
  const ElementMaskRequest request{.rows = rows, .cols = cols, .density = 0.05, .seed = 3, .stream = 8};
  const auto kept = BernoulliElements{}.sample(request);
  CHECK(sorted_unique_in_range(kept, rows * cols));
  CHECK(std::abs(fraction(kept, rows * cols) - 0.05) < five_sigma(0.05, rows * cols));
  CHECK(kept == BernoulliElements{}.sample(request));
  ElementMaskRequest other = request;
  other.stream = 9;
  CHECK(kept != BernoulliElements{}.sample(other));
  CHECK(BernoulliElements{}.sample({.rows = 3, .cols = 3, .density = 1e-9}).size() == 1);
  CHECK_THROWS_AS((void)BernoulliElements{}.sample({.rows = 3, .cols = 3, .density = 0.0}), ValueError);
  CHECK_THROWS_AS((void)BernoulliElements{}.sample({.rows = 70000, .cols = 70000, .density = 0.5}), ShapeError);
}
