// SVD, SNIP and IMP ratio extraction on constructed models, the linear probe,
// thread-count independence and bad inputs.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "plora/io/ratios_json.hpp"
#include "plora/sparsity/sparsity.hpp"
#include "sparsity/fixtures.hpp"
#include "sparsity/tiny_model.hpp"
#include "support/numeric.hpp"

using namespace plora;
using plora::test::FixedBatches;
using plora::test::make_batches;
using plora::test::max_abs_diff;
using plora::test::random_matrix;
using plora::test::RankProblem;
using plora::test::relative_error;
using plora::test::TinyModel;

static_assert(Model<TinyModel>);
static_assert(RatioExtractor<Svd, TinyModel>);
static_assert(RatioExtractor<Snip, TinyModel>);
static_assert(RatioExtractor<Imp, TinyModel>);
static_assert(WeightPruner<SvdPruner<cpu>, cpu>);
static_assert(WeightPruner<EntryPruner<cpu>, cpu>);

namespace {

FixedBatches rank_problem_shots(const RankProblem& problem) {
  const auto [x, labels] = problem.data(96, 7);
  return make_batches(x, labels, 32);
}

/// The bisection's result is minimal: the ratio is the density at the
/// smallest passing q evaluated, and the grid point just below it failed.
void check_minimal(const SiteRatio& site, double target, double step) {
  REQUIRE(site.outcome == SearchOutcome::Found);
  const Probe* smallest_pass = nullptr;
  for (const auto& p : site.probes)
    if (p.metric >= target && (smallest_pass == nullptr || p.q < smallest_pass->q)) smallest_pass = &p;
  REQUIRE(smallest_pass != nullptr);
  CHECK(site.ratio == smallest_pass->density);
  const auto below = std::find_if(site.probes.begin(), site.probes.end(),
                                  [&](const Probe& p) { return std::abs(p.q - (smallest_pass->q - step)) < 1e-12; });
  REQUIRE(below != site.probes.end());
  CHECK(below->metric < target);
}

}  // namespace

TEST_CASE("SVD finds k / rank on a model whose decisive weight has rank k") {
  const RankProblem problem;
  TinyModel model = problem.one_site_model();
  const HostMatrix before(model.site("layer.0.query").weight());
  const FixedBatches shots = rank_problem_shots(problem);

  const RatioReport report = extract_ratios(Svd{}, model, shots, ExtractionConfig{});
  CHECK(report.extractor == "svd");
  // The labels are the model's own predictions (up to float rounding of near-ties).
  CHECK(report.reference_metric >= 95.0 / 96.0);
  REQUIRE(report.sites.size() == 1);
  const SiteRatio& site = report.sites[0];
  CHECK(site.name == "layer.0.query");
  CHECK(site.outcome == SearchOutcome::Found);
  // k = 4 triplets of rank 16 keep every prediction; 3 lose class 3.
  CHECK(std::abs(site.ratio - 4.0 / 16.0) <= 1.0 / 64.0);
  CHECK(site.ratio == 0.25);
  const double target = 0.9 * report.reference_metric;
  const double step = 1.0 / 64.0;
  check_minimal(site, target, step);
  CHECK(site.evaluations == static_cast<int>(site.probes.size()));
  CHECK(site.probes.front().q == 1.0);

  // W restored bit-exactly.
  CHECK(max_abs_diff(model.site("layer.0.query").weight(), before.view()) == 0.0);

  // Scores at k = rank(W): U_k S_k V_k^T = W with orthonormal V_k, so the row
  // norms of U_k S_k are the row norms of W, those of V_k S_k its column norms.
  const HostMatrix w = problem.weight();
  for (Index i = 0; i < RankProblem::n; ++i) {
    double row = 0.0, col = 0.0;
    for (Index j = 0; j < RankProblem::n; ++j) {
      row += double(w(i, j)) * w(i, j);
      col += double(w(j, i)) * w(j, i);
    }
    // float SVD of an O(1) 16 x 16 matrix: errors ~1e-6; 1e-4 leaves margin.
    CHECK(site.row_scores[std::size_t(i)] == doctest::Approx(std::sqrt(row)).epsilon(1e-4));
    CHECK(site.col_scores[std::size_t(i)] == doctest::Approx(std::sqrt(col)).epsilon(1e-4));
  }
  // The extracted subnetwork: round(sqrt(0.25) * 16) = 8 top-scored rows and columns.
  REQUIRE(site.top_rows.size() == 8);
  REQUIRE(site.top_cols.size() == 8);
  float weakest_kept = 1e30f, strongest_dropped = 0.0f;
  for (std::int32_t i = 0; i < 16; ++i) {
    const bool kept = std::binary_search(site.top_rows.begin(), site.top_rows.end(), i);
    const float s = site.row_scores[std::size_t(i)];
    if (kept) weakest_kept = std::min(weakest_kept, s);
    if (!kept) strongest_dropped = std::max(strongest_dropped, s);
  }
  CHECK(weakest_kept >= strongest_dropped);
}

TEST_CASE("the SVD pruner writes rank-k truncations from one factorisation") {
  const RankProblem problem;
  const HostMatrix w = problem.weight();
  const SvdPruner<cpu> pruner(w.view(), "layer.0.query");
  CHECK(pruner.rank() == 16);
  HostMatrix out(16, 16);
  // q = 12/64 keeps ceil(3) = 3 triplets: W minus its smallest nonzero triplet.
  CHECK(pruner.density(12.0 / 64.0) == 3.0 / 16.0);
  pruner.apply(out.view(), 12.0 / 64.0);
  CHECK(max_abs_diff(out.view(), problem.weight(3).view()) < 1e-5);  // float SVD, O(1) entries
  pruner.apply(out.view(), 1.0);
  CHECK(max_abs_diff(out.view(), w.view()) < 1e-5);

  // A NaN or Inf weight has no SVD (Eigen would leave the factors unwritten).
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    HostMatrix poisoned = w;
    poisoned(3, 5) = bad;
    CHECK_THROWS_WITH_AS(SvdPruner<cpu>(poisoned.view(), "layer.0.query"),
                         doctest::Contains("layer.0.query: the weight holds NaN or Inf"), NumericError);
    HostMatrix u, s, vt;
    CHECK_THROWS_WITH_AS(cpu::svd(u, s, vt, poisoned.view()), doctest::Contains("could not be decomposed"),
                         NumericError);
  }
}

TEST_CASE("SNIP scores are |W ⊙ dL/dW| with dL/dW matching finite differences") {
  TinyModel model({{"layer.0.query", random_matrix(8, 6, 11)}, {"layer.1.value", random_matrix(5, 8, 12)}},
                  random_matrix(3, 5, 13), random_matrix(1, 3, 14));
  std::vector<std::int32_t> labels{0, 2, 1, 1, 2, 0, 0, 1};
  const FixedBatches shots = make_batches(random_matrix(8, 6, 15), labels, 4);
  // Total of the batches' mean losses, in double from the model's logits.
  const auto loss = [&]() {
    double total = 0.0;
    for (const auto& batch : shots.batches) {
      const ConstHostView logits = model.forward(batch);
      double batch_loss = 0.0;
      for (Index r = 0; r < logits.rows; ++r) {
        double max_logit = logits(r, 0), sum = 0.0;
        for (Index c = 1; c < logits.cols; ++c) max_logit = std::max(max_logit, double(logits(r, c)));
        for (Index c = 0; c < logits.cols; ++c) sum += std::exp(double(logits(r, c)) - max_logit);
        batch_loss += std::log(sum) + max_logit - double(logits(r, batch.labels[std::size_t(r)]));
      }
      total += batch_loss / static_cast<double>(logits.rows);
    }
    return total;
  };
  for (const std::string name : {"layer.0.query", "layer.1.value"}) {
    CAPTURE(name);
    const HostMatrix scores = snip_scores(model, name, std::span<const ImageBatch>(shots.batches));
    CHECK_FALSE(model.site(name).weight_grad().has_value());  // switched off again
    const HostMatrix gradient = plora::test::finite_difference(model.site(name).mutable_weight(), loss);
    HostMatrix expected(gradient.rows(), gradient.cols());
    const ConstHostView w = model.site(name).weight();
    for (Index r = 0; r < w.rows; ++r)
      for (Index c = 0; c < w.cols; ++c) expected(r, c) = std::abs(w(r, c) * gradient(r, c));
    // h = 1e-2: truncation ~h^2 = 1e-4 of O(1) third derivatives, rounding
    // ~1e-7 * |loss| / h = 1e-5; scores are O(0.1 .. 1).
    CHECK(relative_error(scores.view(), expected.view()) < 2e-3);
  }
  // The head's gradients were zeroed afterwards.
  for (auto& p : model.parameters()) CHECK(plora::test::max_abs(p.grad) == 0.0);

  // A zero head passes no gradient back: the scores would be meaningless.
  TinyModel blind({{"layer.0.query", random_matrix(8, 6, 11)}}, HostMatrix(3, 8), random_matrix(1, 3, 14));
  CHECK_THROWS_WITH_AS(snip_scores(blind, "layer.0.query", std::span<const ImageBatch>(shots.batches)),
                       doctest::Contains("all zero"), ValueError);
  CHECK_FALSE(blind.site("layer.0.query").weight_grad().has_value());
}

TEST_CASE("SNIP extraction keeps the top-scored entries and finds a minimal ratio") {
  const RankProblem problem;
  TinyModel model = problem.two_site_model();
  const FixedBatches shots = rank_problem_shots(problem);
  const RatioReport report = extract_ratios(Snip{}, model, shots, ExtractionConfig{});
  CHECK(report.extractor == "snip");
  const double target = 0.9 * report.reference_metric;
  for (const auto& site : report.sites) {
    CAPTURE(site.name);
    if (site.outcome == SearchOutcome::Found) check_minimal(site, target, 1.0 / 64.0);
    // ratio = ceil(q * 256) / 256 for the q found.
    CHECK(site.ratio * 256.0 == std::round(site.ratio * 256.0));
    // Row and column sums of the kept scores agree in total.
    const double rows = std::accumulate(site.row_scores.begin(), site.row_scores.end(), 0.0);
    const double cols = std::accumulate(site.col_scores.begin(), site.col_scores.end(), 0.0);
    CHECK(rows == doctest::Approx(cols).epsilon(1e-6));
  }
  // The pruner keeps exactly the ceil(q * entries) entries of largest |W ⊙ dL/dW|.
  const auto pruner = Snip{}.pruner(model, "layer.0.query", std::span<const ImageBatch>(shots.batches));
  const HostMatrix kept = pruner.pruned(0.3);
  const auto& s = pruner.entry_scores().values();
  std::vector<float> sorted(s.begin(), s.end());
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  const auto count = static_cast<std::size_t>(std::ceil(0.3 * 256));
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] > sorted[count]) CHECK(kept.values()[i] == model.site("layer.0.query").weight().data[i]);
    if (s[i] < sorted[count - 1]) CHECK(kept.values()[i] == 0.0f);
  }
}

TEST_CASE("IMP keeps the largest magnitudes and follows the 0.8^r schedule") {
  const RankProblem problem;
  TinyModel model = problem.two_site_model();
  const FixedBatches shots = rank_problem_shots(problem);

  const std::vector<double> schedule = Imp{}.schedule(1.0 / 64.0);
  double expected = 1.0;
  std::size_t rounds = 0;
  for (; expected >= 1.0 / 64.0; expected *= 0.8, ++rounds) {
    REQUIRE(rounds < schedule.size());
    CHECK(schedule[rounds] == doctest::Approx(expected).epsilon(1e-12));
  }
  CHECK(schedule.size() == rounds);  // 0.8^18 = 0.018 >= 1/64 > 0.8^19
  CHECK(rounds == 19);
  // A fraction that barely shrinks the density would need millions of rounds (1e-17: forever).
  CHECK_THROWS_WITH_AS(Imp{1e-6}.schedule(1.0 / 64.0), doctest::Contains("rounds to reach the resolution"), ValueError);
  CHECK_THROWS_WITH_AS(Imp{1e-17}.schedule(1.0 / 64.0), doctest::Contains("IMP prune fraction 1e-17 needs "),
                       ValueError);

  const auto pruner = Imp{}.pruner(model, "layer.0.value", std::span<const ImageBatch>(shots.batches));
  const ConstHostView w = model.site("layer.0.value").weight();
  const HostMatrix kept = pruner.pruned(0.64);
  const auto keep = static_cast<std::size_t>(std::ceil(0.64 * 256));
  std::size_t nonzero = 0;
  float smallest_kept = 1e30f, largest_dropped = 0.0f;
  for (Index i = 0; i < w.size(); ++i) {
    const float value = kept.values()[std::size_t(i)];
    if (value != 0.0f) {
      ++nonzero;
      CHECK(value == w.data[i]);
      smallest_kept = std::min(smallest_kept, std::abs(value));
    } else {
      largest_dropped = std::max(largest_dropped, std::abs(w.data[i]));
    }
  }
  CHECK(nonzero == keep);
  CHECK(smallest_kept >= largest_dropped);

  const RatioReport report = extract_ratios(Imp{}, model, shots, ExtractionConfig{});
  const double target = 0.9 * report.reference_metric;
  for (const auto& site : report.sites) {
    CAPTURE(site.name);
    for (std::size_t r = 0; r < site.probes.size(); ++r) {
      CHECK(site.probes[r].q == doctest::Approx(std::pow(0.8, double(r))).epsilon(1e-12));
      CHECK(site.probes[r].density == std::ceil(std::pow(0.8, double(r)) * 256 - 1e-9) / 256);
    }
    if (site.outcome == SearchOutcome::Found) {
      // The last probe failed; the one before it is the ratio.
      CHECK(site.probes.back().metric < target);
      CHECK(site.probes[site.probes.size() - 2].metric >= target);
      CHECK(site.ratio == site.probes[site.probes.size() - 2].density);
    }
  }
}

TEST_CASE("results and ratios.json bytes are identical for 1 and 2 threads") {
  const RankProblem problem;
  const FixedBatches shots = rank_problem_shots(problem);
  const auto run = [&](const auto& extractor, int threads) {
    TinyModel model = problem.two_site_model();
    const HostMatrix q(model.site("layer.0.query").weight()), v(model.site("layer.0.value").weight());
    ExtractionConfig config;
    config.threads = threads;
    config.seed = 5;
    const RatioReport report = extract_ratios(extractor, model, shots, config);
    CHECK(max_abs_diff(model.site("layer.0.query").weight(), q.view()) == 0.0);
    CHECK(max_abs_diff(model.site("layer.0.value").weight(), v.view()) == 0.0);
    return io::ratios_to_json(report);
  };
  CHECK(run(Svd{}, 1) == run(Svd{}, 2));
  CHECK(run(Snip{}, 1) == run(Snip{}, 2));
  CHECK(run(Imp{}, 1) == run(Imp{}, 3));
}

TEST_CASE("targets select sites the PEFT way") {
  const std::vector<std::string> names{"a.layer.0.query", "a.layer.0.value", "a.layer.1.query"};
  CHECK(select_sites(names, {}) == names);
  CHECK(select_sites(names, {"query"}) == std::vector<std::string>{"a.layer.0.query", "a.layer.1.query"});
  CHECK(select_sites(names, {"a.layer.0.value"}) == std::vector<std::string>{"a.layer.0.value"});
  CHECK_THROWS_AS(select_sites(names, {"ery"}), ValueError);  // a suffix must follow a '.'
  CHECK_THROWS_WITH_AS(select_sites(names, {"key"}), doctest::Contains("'key'"), ValueError);

  const RankProblem problem;
  TinyModel model = problem.two_site_model();
  ExtractionConfig config;
  config.targets = {"value"};
  const RatioReport report = extract_ratios(Svd{}, model, rank_problem_shots(problem), config);
  REQUIRE(report.sites.size() == 1);
  CHECK(report.sites[0].name == "layer.0.value");
}

TEST_CASE("the linear probe fits the head and leaves the backbone alone") {
  // x (64 x 8) through an identity site; labels from a fixed linear map; a
  // zero head must learn it.
  HostMatrix identity(8, 8);
  for (Index i = 0; i < 8; ++i) identity(i, i) = 1.0f;
  TinyModel model({{"layer.0.query", identity}}, HostMatrix(3, 8), HostMatrix(1, 3));
  const HostMatrix x = random_matrix(64, 8, 21), map = random_matrix(3, 8, 22);
  std::vector<std::int32_t> labels;
  for (Index s = 0; s < 64; ++s) {
    std::int32_t best = 0;
    double best_logit = -1e300;
    for (std::int32_t c = 0; c < 3; ++c) {
      double logit = 0.0;
      for (Index i = 0; i < 8; ++i) logit += double(map(c, i)) * x(s, i);
      if (logit > best_logit) std::tie(best_logit, best) = std::pair(logit, c);
    }
    labels.push_back(best);
  }
  const FixedBatches shots = make_batches(x, labels, 64);  // one batch: epoch 0's loss is the zero head's
  const auto batches = few_shot_batches(shots);
  const double before = evaluate_metric(model, std::span<const ImageBatch>(batches), metrics::Metric::Accuracy);

  LinearProbeConfig config;
  config.epochs = 60;
  config.optimizer.lr = 0.05;
  const std::vector<float> losses = fit_linear_probe(model, shots, config);
  REQUIRE(losses.size() == 60);
  CHECK(losses.front() == doctest::Approx(std::log(3.0)).epsilon(1e-5));  // a zero head: uniform softmax
  CHECK(losses.back() < 0.5f * losses.front());
  const double after = evaluate_metric(model, std::span<const ImageBatch>(batches), metrics::Metric::Accuracy);
  CHECK(after >= 0.9);
  CHECK(after > before);
  CHECK(max_abs_diff(model.site("layer.0.query").weight(), identity.view()) == 0.0);

  LinearProbeConfig headless;
  headless.head_prefixes = {"pooler"};
  CHECK_THROWS_WITH_AS(fit_linear_probe(model, shots, headless), doctest::Contains("'pooler'"), ValueError);
  LinearProbeConfig no_epochs;
  no_epochs.epochs = 0;
  CHECK_THROWS_AS(fit_linear_probe(model, shots, no_epochs), ValueError);
  CHECK_THROWS_AS(fit_linear_probe(model, FixedBatches{}, config), ValueError);
}

namespace {
/// A few-shot source whose selection fails, as io's few_shot does for a class
/// with fewer examples than shots.
struct FailingSelection {
  using Batch = ImageBatch;
  [[nodiscard]] Index batches_per_epoch() const { return 1; }
  [[nodiscard]] ImageBatch batch(Index, Index) const {
    throw ValueError("few_shot: class 2 has 3 examples, fewer than the 5 shots asked for");
  }
};

struct PinnedModel : TinyModel {
  using TinyModel::TinyModel;
  explicit PinnedModel(TinyModel model) : TinyModel(std::move(model)) {}
  PinnedModel(const PinnedModel&) = delete;
  PinnedModel& operator=(const PinnedModel&) = delete;
};
}  // namespace

TEST_CASE("bad inputs give clear errors") {
  const RankProblem problem;
  TinyModel model = problem.two_site_model();
  const FixedBatches shots = rank_problem_shots(problem);
  ExtractionConfig config;

  SUBCASE("tau outside (0, 1]") {
    for (const double tau : {0.0, -0.5, 1.5}) {
      config.tau = tau;
      CHECK_THROWS_WITH_AS(extract_ratios(Svd{}, model, shots, config), doctest::Contains("tau"), ValueError);
    }
  }
  SUBCASE("resolution outside (0, 1)") {
    config.resolution = 1.0;
    CHECK_THROWS_AS(extract_ratios(Svd{}, model, shots, config), ValueError);
  }
  SUBCASE("zero shots") {
    CHECK_THROWS_WITH_AS(extract_ratios(Svd{}, model, FixedBatches{}, config), doctest::Contains("zero shots"),
                         ValueError);
    FixedBatches empty_batch;
    empty_batch.batches.push_back(ImageBatch{HostMatrix(0, RankProblem::n), {}});
    CHECK_THROWS_WITH_AS(extract_ratios(Svd{}, model, empty_batch, config), doctest::Contains("no examples"),
                         ValueError);
  }
  SUBCASE("a failing few-shot selection propagates unchanged") {
    CHECK_THROWS_WITH_AS(extract_ratios(Svd{}, model, FailingSelection{}, config),
                         "few_shot: class 2 has 3 examples, fewer than the 5 shots asked for", ValueError);
  }
  SUBCASE("an error in a worker thread propagates and weights are restored") {
    const HostMatrix q(model.site("layer.0.query").weight());
    model.poison("layer.0.value");
    for (const int threads : {1, 2}) {
      config.threads = threads;
      CHECK_THROWS_WITH_AS(extract_ratios(Svd{}, model, shots, config), doctest::Contains("poisoned"), ValueError);
      model.poison("");
      CHECK(max_abs_diff(model.site("layer.0.query").weight(), q.view()) == 0.0);
      model.poison("layer.0.value");
    }
  }
  SUBCASE("a reference metric of 0") {
    config.metric = metrics::Metric::Mcc;
    TinyModel blind({{"layer.0.query", problem.weight()}}, HostMatrix(RankProblem::k, RankProblem::n),
                    HostMatrix(1, RankProblem::k));  // constant prediction: MCC 0
    CHECK_THROWS_WITH_AS(extract_ratios(Svd{}, blind, shots, config), doctest::Contains("M0 > 0"), ValueError);
  }
  SUBCASE("threads > 1 on a model that cannot be copied") {
    PinnedModel pinned(problem.two_site_model());
    config.threads = 2;
    CHECK_THROWS_WITH_AS(extract_ratios(Svd{}, pinned, shots, config), doctest::Contains("copy-constructible"),
                         ValueError);
    config.threads = 1;
    CHECK_NOTHROW(extract_ratios(Svd{}, pinned, shots, config));
  }
  SUBCASE("a metric over no batches, or over batches of different output widths") {
    const std::vector<ImageBatch> none;
    const auto unused = [](std::size_t) -> ConstView<Host> { return {}; };
    CHECK_THROWS_WITH_AS(evaluate_outputs<cpu>(std::span(none), metrics::Metric::Accuracy, unused),
                         "metric evaluation: no batches to evaluate", ValueError);
    const std::vector<ImageBatch> two(2, ImageBatch{HostMatrix(1, 1), {0}});
    const HostMatrix narrow(1, 2), wide(1, 3);
    CHECK_THROWS_WITH_AS(
        evaluate_outputs<cpu>(std::span(two), metrics::Metric::Accuracy,
                              [&](std::size_t i) { return i == 0 ? narrow.view() : wide.view(); }),
        "metric evaluation: batch 1 gave 3 output columns, earlier batches 2", ShapeError);
  }
  SUBCASE("negative threads and unknown targets") {
    config.threads = -1;
    CHECK_THROWS_AS(extract_ratios(Svd{}, model, shots, config), ValueError);
    config.threads = 1;
    config.targets = {"key"};
    CHECK_THROWS_WITH_AS(extract_ratios(Svd{}, model, shots, config), doctest::Contains("'key'"), ValueError);
  }
}
