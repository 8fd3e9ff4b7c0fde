// SVD ratio extraction (METHOD.md §2) on a ViT-B/16-shaped model with random
// weights (transformers' init) and a few-shot set of 64 random images, labelled
// with the unmodified model's own predictions so that the reference accuracy
// is M0 = 1 and every probe measures how far pruning one weight moves them.
//
// The full model has 72 adaptable weights (12 layers x q, k, v, o, MLP up,
// MLP down); each costs one SVD plus ~8 evaluations of the 64 images
// (bisection on the default 1/64 grid), over an hour on 2 shared cores. The case
// therefore runs the whole extraction on a ViT-B/16 cut to `layers` layers
// (range(0); same widths, all 6 * layers weights) and extrapolates to 12
// layers, labelled as such: SVD and reconstruction scale with the number of
// weights (x 12 / layers); a probe of a weight in layer l reruns layers l..
// only, so the probes' layer passes grow as layers (layers + 1) / 2 per
// weight's share (x 78 / (layers (layers + 1) / 2)); the rest (M0 and each
// layer's cached inputs, one whole forward per layer) as (12 / layers)^2.
// Counters: total_s (extract_ratios wall time), svd_s (factorisations),
// reconstruct_s (writing each rank-k weight), forward_s (the probes' few-shot
// forward passes and metric), reference_s (the rest: M0's evaluation, scores),
// evaluations, sites, svd_share and forward_share of total_s, and
// extrapolated_vit_b16_s with its svd / forward shares.
// Validation before timing: M0 = 1, each weight restored bit-exactly after
// extraction, every ratio in (0, 1].
#include <benchmark/benchmark.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include "../models/bench_support.hpp"
#include "plora/adapters/lora.hpp"
#include "plora/backend/cpu/cpu.hpp"
#include "plora/models/vit.hpp"
#include "plora/sparsity/extract.hpp"
#include "plora/sparsity/svd.hpp"

namespace {
using namespace plora;
using namespace plora::bench;
using Clock = std::chrono::steady_clock;

constexpr Index kShots = 64;
constexpr Index kShotBatch = 16;

struct Timers {
  double svd = 0.0;
  double reconstruct = 0.0;
  double probes = 0.0;  // metric calls of the search: reconstruct + forward passes
  int evaluations = 0;
};

double since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

/// SvdPruner whose apply() is timed.
struct TimedPruner {
  SvdPruner<cpu> inner;
  Timers* timers;
  [[nodiscard]] double density(double q) const { return inner.density(q); }
  void apply(View<Host> out, double q) const {
    const auto start = Clock::now();
    inner.apply(out, q);
    timers->reconstruct += since(start);
  }
  [[nodiscard]] SiteScores scores(double q) const { return inner.scores(q); }
};

/// The Svd extractor with its factorisations and probes timed.
struct TimedSvd {
  static constexpr std::string_view name = Svd::name;
  Timers* timers;

  template <Model M>
  [[nodiscard]] TimedPruner pruner(M& model, const std::string& site, std::span<const typename M::Batch> shots) const {
    const auto start = Clock::now();
    TimedPruner out{Svd{}.pruner(model, site, shots), timers};
    timers->svd += since(start);
    return out;
  }
  template <class Metric>
  [[nodiscard]] SearchOutcome search(Metric&& metric, double target, double resolution) const {
    return Svd{}.search(
        [&](double q) {
          const auto start = Clock::now();
          const double value = metric(q);
          timers->probes += since(start);
          ++timers->evaluations;
          return value;
        },
        target, resolution);
  }
};

/// The few-shot set as a BatchSource: fixed batches, the same every epoch.
struct FewShot {
  using Batch = ImageBatch;
  std::vector<ImageBatch> batches;
  [[nodiscard]] Index batches_per_epoch() const { return static_cast<Index>(batches.size()); }
  [[nodiscard]] ImageBatch batch(Index, Index i) const { return batches[static_cast<std::size_t>(i)]; }
};

void require(bool ok, const std::string& what) {
  if (!ok) throw std::logic_error("validation failed: " + what);
}

void extract_svd_vit_b16(benchmark::State& state) {
  const Index layers = state.range(0);
  ViTConfig config = vit_base_config();
  config.num_hidden_layers = layers;
  Vit<cpu, Lora<cpu>> model(config, hf_init);
  FewShot few_shot;
  for (Index b = 0; b < kShots / kShotBatch; ++b) {
    ImageBatch batch = random_images(config, kShotBatch, 100 + static_cast<std::uint64_t>(b));
    const HostMatrix logits = to_host<cpu>(model.forward(batch));
    for (Index i = 0; i < logits.rows(); ++i) {
      const float* row = logits.data() + i * logits.cols();
      batch.labels[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(std::max_element(row, row + logits.cols()) - row);
    }
    few_shot.batches.push_back(std::move(batch));
  }
  ExtractionConfig extraction;
  for (Index l = 0; l < layers; ++l)
    for (const auto suffix : VitLayer<cpu, Lora<cpu>>::kSites)
      extraction.targets.push_back(std::string(Vit<cpu, Lora<cpu>>::kLayerPrefix) + std::to_string(l) + "." +
                                   std::string(suffix));
  std::vector<HostMatrix> before;
  for (const auto& name : extraction.targets) before.emplace_back(model.site(name).weight());

  for (auto _ : state) {
    Timers timers;
    const RatioReport report = extract_ratios(TimedSvd{&timers}, model, few_shot, extraction);
    require(report.reference_metric == 1.0, "M0 = " + std::to_string(report.reference_metric) + ", expected 1");
    for (std::size_t i = 0; i < before.size(); ++i) {
      require(HostMatrix(model.site(extraction.targets[i]).weight()).values() == before[i].values(),
              extraction.targets[i] + " was not restored exactly");
      require(report.sites[i].ratio > 0.0 && report.sites[i].ratio <= 1.0, extraction.targets[i] + ": ratio out of (0, 1]");
    }
    const double forward = timers.probes - timers.reconstruct;
    const double reference = report.seconds - timers.svd - timers.probes;
    state.counters["total_s"] = report.seconds;
    state.counters["svd_s"] = timers.svd;
    state.counters["reconstruct_s"] = timers.reconstruct;
    state.counters["forward_s"] = forward;
    state.counters["reference_s"] = reference;
    state.counters["evaluations"] = timers.evaluations;
    state.counters["sites"] = static_cast<double>(report.sites.size());
    state.counters["svd_share"] = timers.svd / report.seconds;
    state.counters["forward_share"] = forward / report.seconds;
    const double scale = 12.0 / static_cast<double>(layers);
    const double probe_scale = 78.0 / (static_cast<double>(layers * (layers + 1)) / 2.0);
    const double full = scale * (timers.svd + timers.reconstruct) + scale * scale * reference + probe_scale * forward;
    state.counters["extrapolated_vit_b16_s"] = full;
    state.counters["extrapolated_svd_share"] = scale * timers.svd / full;
    state.counters["extrapolated_forward_share"] = probe_scale * forward / full;
    state.counters["peak_RSS_MiB"] = peak_rss_mib();
  }
}

/// One factorisation of each ViT-B/16 weight shape, for the per-shape cost.
void svd_shape(benchmark::State& state) {
  HostMatrix w = hf_init("svd_shape", state.range(0), state.range(1));
  SvdPruner<cpu> check(w.view(), "svd_shape");
  HostMatrix full(w.rows(), w.cols());
  check.apply(full.view(), 1.0);
  double worst = 0.0;
  for (std::size_t i = 0; i < w.values().size(); ++i)
    worst = std::max(worst, static_cast<double>(std::abs(full.values()[i] - w.values()[i])));
  // Entries ~0.02 and singular values ~0.02 sqrt(n): fp32 reconstruction error well below 1e-5.
  require(worst < 1e-5, "U S V^T differs from W by " + std::to_string(worst));
  for (auto _ : state) benchmark::DoNotOptimize(SvdPruner<cpu>(w.view(), "svd_shape"));
}
}  // namespace

BENCHMARK(svd_shape)->Args({768, 768})->Args({3072, 768})->Args({768, 3072})->Iterations(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(extract_svd_vit_b16)->Arg(1)->Arg(2)->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);
BENCHMARK_MAIN();
