// Task metrics against hand-computed values and independent naive formulas.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "plora/core/host_matrix.hpp"
#include "plora/train/metrics.hpp"

using namespace plora;
using namespace plora::metrics;
using I = std::vector<std::int32_t>;
using F = std::vector<float>;

namespace {
// MCC as the correlation of one-hot indicator matrices X (true) and Y (predicted):
// cov(X, Y) / sqrt(cov(X, X) cov(Y, Y)) with cov summed over classes
// (Gorodkin 2004's definition, independent of the confusion-matrix shortcut).
double mcc_by_covariance(const I& pred, const I& labels, int classes) {
  const double n = double(labels.size());
  auto cov = [&](const I& a, const I& b) {
    double total = 0.0;
    for (int k = 0; k < classes; ++k) {
      double ma = 0, mb = 0;
      for (std::size_t i = 0; i < a.size(); ++i) {
        ma += a[i] == k;
        mb += b[i] == k;
      }
      ma /= n;
      mb /= n;
      for (std::size_t i = 0; i < a.size(); ++i) total += (double(a[i] == k) - ma) * (double(b[i] == k) - mb);
    }
    return total;
  };
  return cov(labels, pred) / std::sqrt(cov(labels, labels) * cov(pred, pred));
}
}  // namespace

// All metrics are ratios of small integer counts or short double sums: exact
// up to a few ulps of double, so 1e-12 is a safe tolerance.
constexpr double kTol = 1e-12;

TEST_CASE("accuracy counts exact matches") {
  CHECK(accuracy(I{0, 1, 1, 0, 2}, I{0, 1, 0, 0, 1}) == doctest::Approx(0.6).epsilon(kTol));
  CHECK(accuracy(I{3}, I{3}) == 1.0);
}

TEST_CASE("binary F1 of the positive class") {
  // tp = 2 (i = 0, 3), fp = 1 (i = 1), fn = 1 (i = 4): F1 = 2*2 / (2*2 + 1 + 1) = 2/3.
  CHECK(binary_f1(I{1, 1, 0, 1, 0, 0}, I{1, 0, 0, 1, 1, 0}) == doctest::Approx(2.0 / 3.0).epsilon(kTol));
  // No positives anywhere: precision and recall undefined -> 0 (sklearn's zero_division).
  CHECK(binary_f1(I{0, 0}, I{0, 0}) == 0.0);
  CHECK_THROWS_AS((void)binary_f1(I{2, 0}, I{1, 0}), ValueError);
}

TEST_CASE("macro F1 averages per-class F1 over the classes that occur") {
  // labels 0 0 1 1 2 2, predictions 0 1 1 1 0 2:
  // class 0: tp 1 fp 1 fn 1 -> 2/4; class 1: tp 2 fp 1 fn 0 -> 4/5; class 2: tp 1 fp 0 fn 1 -> 2/3.
  const double expected = (0.5 + 0.8 + 2.0 / 3.0) / 3.0;
  CHECK(macro_f1(I{0, 1, 1, 1, 0, 2}, I{0, 0, 1, 1, 2, 2}, 3) == doctest::Approx(expected).epsilon(kTol));
  // Class 3 never occurs: it is left out of the average rather than counted as 0.
  CHECK(macro_f1(I{0, 1, 1, 1, 0, 2}, I{0, 0, 1, 1, 2, 2}, 4) == doctest::Approx(expected).epsilon(kTol));
  CHECK_THROWS_AS((void)macro_f1(I{0, 3}, I{0, 1}, 3), ValueError);
}

TEST_CASE("Matthews correlation: binary hand value, multi-class against the covariance form") {
  // tp 2, tn 2, fp 1, fn 1: (2*2 - 1*1) / sqrt(3 * 3 * 3 * 3) = 1/3.
  CHECK(matthews_corrcoef(I{1, 1, 0, 1, 0, 0}, I{1, 0, 0, 1, 1, 0}) == doctest::Approx(1.0 / 3.0).epsilon(kTol));
  const I labels{0, 2, 1, 1, 2, 0, 0, 1, 2, 2, 1, 0};
  const I pred{0, 2, 1, 0, 1, 0, 2, 1, 2, 0, 1, 1};
  CHECK(matthews_corrcoef(pred, labels) == doctest::Approx(mcc_by_covariance(pred, labels, 3)).epsilon(kTol));
  CHECK(matthews_corrcoef(labels, labels) == doctest::Approx(1.0).epsilon(kTol));
  // A constant prediction makes MCC undefined: scored 0 like sklearn.
  CHECK(matthews_corrcoef(I{1, 1, 1}, I{0, 1, 0}) == 0.0);
}

TEST_CASE("Pearson and Spearman correlation") {
  // x = 1 2 3, y = 2 4 7: sxy = 5, sxx = 2, syy = 114/9 -> r = 15 / sqrt(228).
  CHECK(pearson(F{1, 2, 3}, F{2, 4, 7}) == doctest::Approx(15.0 / std::sqrt(228.0)).epsilon(1e-7));
  CHECK(pearson(F{1, 2, 3}, F{3, 2, 1}) == doctest::Approx(-1.0).epsilon(kTol));
  // Ties share the average rank: ranks(x) = 1 2.5 2.5 4, ranks(y) = 1 3 2 4,
  // sxy = 4.5, sxx = 4.5, syy = 5 -> rho = sqrt(0.9).
  CHECK(spearman(F{1, 2, 2, 3}, F{1.5f, 9, 2, 10}) == doctest::Approx(std::sqrt(0.9)).epsilon(kTol));
  // Any strictly increasing transform has rank correlation 1 but Pearson < 1.
  const F x{0.1f, 0.5f, 1.0f, 2.0f, 4.0f}, y{0.01f, 0.25f, 1.0f, 4.0f, 16.0f};
  CHECK(spearman(x, y) == doctest::Approx(1.0).epsilon(kTol));
  CHECK(pearson(x, y) < 0.99);
  CHECK(pearson(F{1, 1, 1}, F{1, 2, 3}) == 0.0);
  // A diverged model's outputs have no ranks: scored as undefined (0), never as a match.
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  CHECK(spearman(F{nan, nan, nan, nan, nan}, F{1, 2, 3, 4, 5}) == 0.0);
  CHECK(spearman(F{1, nan, 3, 2, 5}, F{1, 2, 3, 4, 5}) == 0.0);
  CHECK(pearson(F{1, 2, inf}, F{1, 2, 3}) == 0.0);
  CHECK(spearman(F{1, 2, 3}, F{1, nan, 3}) == 0.0);
}

TEST_CASE("argmax_rows takes the first maximum; score dispatches on the metric") {
  const HostMatrix logits(3, 3, {0.1f, 0.7f, 0.2f,  //
                                 2.0f, 2.0f, 1.0f,  //
                                 -1.0f, -3.0f, -0.5f});
  CHECK(argmax_rows(logits.view()) == I{1, 0, 2});
  // The first NaN of a row wins, as numpy.argmax.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  CHECK(argmax_rows(HostMatrix(3, 3, {1.0f, nan, 2.0f, nan, 5.0f, nan, 0.0f, 3.0f, nan}).view()) == I{1, 0, 2});
  CHECK(score(Metric::Accuracy, logits.view(), I{1, 1, 2}, {}) == doctest::Approx(2.0 / 3.0).epsilon(kTol));
  const HostMatrix regression(3, 1, {1.0f, 2.0f, 3.0f});
  CHECK(score(Metric::Pearson, regression.view(), {}, F{2, 4, 7}) ==
        doctest::Approx(15.0 / std::sqrt(228.0)).epsilon(1e-7));
}

TEST_CASE("metric names round-trip; bad inputs are rejected") {
  for (Metric m : {Metric::Accuracy, Metric::MacroF1, Metric::BinaryF1, Metric::Mcc, Metric::Pearson,
                   Metric::Spearman})
    CHECK(parse_metric(metric_name(m)) == m);
  CHECK(parse_metric("ACC") == Metric::Accuracy);
  CHECK(parse_metric("matthews_corrcoef") == Metric::Mcc);
  CHECK_THROWS_AS((void)parse_metric("auroc"), ValueError);
  CHECK_THROWS_AS((void)accuracy(I{}, I{}), ValueError);
  CHECK_THROWS_AS((void)accuracy(I{1, 0}, I{1}), ValueError);
  CHECK_THROWS_AS((void)pearson(F{1, 2}, F{1, 2, 3}), ValueError);
  CHECK_THROWS_AS((void)spearman(F{}, F{}), ValueError);
  CHECK_THROWS_AS((void)matthews_corrcoef(I{}, I{}), ValueError);
}
