// Whole-model CPU benchmarks with random weights (transformers' init):
// ViT-B/16 and ViT-S/16 (batch 8, 224 x 224); DeBERTa-v3-base has its own
// file (bench_deberta.cpp):
//   forward       eval forward only
//   lora          LoRA training step: r = 8, alpha 16 on query + value, head
//                 trained, AdamW (zero_grad + forward + backward + update)
//   partial13     the same with Partial-LoRA at ΔW density 0.13 (balanced
//                 Bernoulli masks, METHOD.md §1)
//   full          full fine-tuning: FullDelta on every linear site + head (ViT)
// Counters per case: median and min seconds per iteration, GFLOP (the GEMM
// work of one iteration, bench_support.hpp vit_work), GFLOP/s from the median,
// peak_fraction = GFLOP/s / the SGEMM peak (sgemm_peak_gflops), trainable
// parameters, peak_RSS_MiB (the process's peak after a reset at the start of
// the case; run one case per process, --benchmark_filter, for a clean figure).
// Each case validates its model once before timing it: logits finite and
// reproducible, the returned loss equal to a naive cross-entropy of the
// logits, lora_A gradients exactly zero at B = 0 and every other gradient
// non-zero.
#include <benchmark/benchmark.h>
#include <malloc.h>

#include <chrono>
#include <cmath>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "plora/adapters/full_delta.hpp"
#include "plora/adapters/lora.hpp"
#include "plora/adapters/partial.hpp"
#include "plora/masks/bernoulli.hpp"
#include "plora/models/sites.hpp"
#include "plora/models/vit.hpp"
#include "plora/train/adamw.hpp"

namespace {
using namespace plora;
using namespace plora::bench;

constexpr Index kBatch = 8;
constexpr double kPartialDensity = 0.13;
const std::vector<std::string> kLoraTargets = {"query", "value"};
const std::vector<std::string> kAllLinear = {"query", "key", "value", "dense"};

enum class Mode { Forward, Lora, Partial, Full };

Lora<cpu> make_lora(const std::string& site, Index out, Index in) {
  return Lora<cpu>(out, in, LoraConfig{.rank = 8, .alpha = 16}, RandomStream(0, stream_id(site)));
}
PartialLora<cpu> make_partial(const std::string& site, Index out, Index in) {
  const RowColMask mask =
      PartialMask{}.sample({.out = out, .in = in, .ratio = kPartialDensity, .seed = 7, .stream = stream_id(site)});
  return PartialLora<cpu>(out, in,
                          {.inner = {.rank = 8, .alpha = 16}, .kept_rows = mask.rows, .kept_cols = mask.cols},
                          RandomStream(0, stream_id(site)));
}
FullDelta<cpu> make_full(const std::string&, Index out, Index in) {
  return FullDelta<cpu>(out, in, {}, RandomStream(0, 0));
}

/// Kept rows / columns summed over the adapted sites (layer 0's columns apart).
template <class M>
AdapterExtent adapter_extent(M& model) {
  AdapterExtent e;
  for (const auto& name : model.site_names()) {
    auto& site = model.site(name);
    if (!site.has_adapter()) continue;
    double rows = static_cast<double>(site.out_features()), cols = static_cast<double>(site.in_features());
    if constexpr (requires { site.adapter().kept_rows(); }) {
      rows = static_cast<double>(site.adapter().kept_rows().size());
      cols = static_cast<double>(site.adapter().kept_cols().size());
    }
    e.rows += rows;
    e.cols += cols;
    if (name.find("layer.0.") != std::string::npos) e.layer0_cols += cols;
  }
  return e;
}

void require(bool ok, const std::string& what) {
  if (!ok) throw std::logic_error("validation failed: " + what);
}

/// Naive mean cross-entropy of host logits, in double.
double naive_cross_entropy(const HostMatrix& logits, const std::vector<std::int32_t>& labels) {
  double total = 0.0;
  for (Index r = 0; r < logits.rows(); ++r) {
    double max = logits(r, 0), sum = 0.0;
    for (Index c = 0; c < logits.cols(); ++c) max = std::max(max, static_cast<double>(logits(r, c)));
    for (Index c = 0; c < logits.cols(); ++c) sum += std::exp(logits(r, c) - max);
    total += std::log(sum) + max - logits(r, labels[static_cast<std::size_t>(r)]);
  }
  return total / static_cast<double>(logits.rows());
}

/// The checks listed at the top of the file; leaves gradients zeroed.
template <class M>
void validate(M& model, const typename M::Batch& batch, Mode mode) {
  const HostMatrix logits = to_host<cpu>(model.forward(batch));
  require(cpu::all_finite(logits.view()), "logits are not finite");
  const HostMatrix again = to_host<cpu>(model.forward(batch));
  require(logits.values() == again.values(), "two forwards of one batch differ");
  if (mode == Mode::Forward) return;
  model.zero_grad();
  const double loss = model.forward_backward(batch);
  // fp32 log-softmax over a handful of O(1) logits: relative error ~1e-6; 1e-4 leaves margin.
  const double expected = naive_cross_entropy(logits, batch.labels);
  require(std::abs(loss - expected) <= 1e-4 * std::max(1.0, expected),
          "loss " + std::to_string(loss) + " vs naive cross-entropy " + std::to_string(expected));
  for (const auto& p : model.parameters()) {
    const double g = cpu::sum_squares(p.grad);
    require(std::isfinite(g), p.name + " gradient is not finite");
    if (p.name.ends_with("lora_A"))
      require(g == 0.0, p.name + " gradient must be exactly zero while lora_B is zero");
    else
      require(g > 0.0, p.name + " gradient is zero");
  }
  model.zero_grad();
}

/// Times `iteration` (one call per benchmark iteration) and sets the counters.
template <class M, class Iteration>
void time_iterations(benchmark::State& state, M& model, double flops, Iteration&& iteration) {
  std::vector<double> seconds;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    iteration();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  const double med = median(seconds);
  state.counters["median_s"] = med;
  state.counters["min_s"] = *std::min_element(seconds.begin(), seconds.end());
  state.counters["peak_RSS_MiB"] = peak_rss_mib();
  Index trainable = 0;
  for (const auto& p : model.parameters()) trainable += p.value.size();
  state.counters["trainable"] = static_cast<double>(trainable);
  if (flops > 0.0) {
    state.counters["GFLOP"] = flops / 1e9;
    state.counters["GFLOP/s"] = flops / med / 1e9;
    state.counters["peak_fraction"] = flops / med / 1e9 / sgemm_peak_gflops();
  }
}

/// One case: build, attach, validate, warm up (the validation), time.
/// @param step_flops  callable double(M&): GEMM FLOPs of one training step (0: not counted)
template <class M, class Factory, class StepFlops>
void run_case(benchmark::State& state, M& model, const typename M::Batch& batch, Mode mode,
              const std::vector<std::string>& targets, Factory&& factory, double flops_forward,
              StepFlops&& step_flops) {
  if (mode != Mode::Forward) attach_adapters(model, std::span(targets), factory);
  validate(model, batch, mode);
  if (mode == Mode::Forward) {
    model.set_training(false);
    time_iterations(state, model, flops_forward, [&] { benchmark::DoNotOptimize(model.forward(batch).data); });
    return;
  }
  AdamW<cpu> optimizer(AdamWConfig{.lr = 1e-3});
  ParameterList<Host> params = model.parameters();
  model.set_training(true);
  const auto step = [&] {
    model.zero_grad();
    benchmark::DoNotOptimize(model.forward_backward(batch));
    optimizer.step(params);
  };
  step();  // warm-up: the optimizer allocates its moments on the first step
  time_iterations(state, model, step_flops(model), step);
}

void start_case() {
  malloc_trim(0);  // hand freed memory of earlier cases back, so the peak mark below is this case's
  if (!reset_peak_rss()) std::fprintf(stderr, "note: cannot reset the peak-RSS mark; peak_RSS_MiB is the process's\n");
  sgemm_peak_gflops();  // measured once per process, before the case's model exists
}

template <class A>
void vit_case(benchmark::State& state, const ViTConfig& config, Mode mode) {
  start_case();
  Vit<cpu, A> model(config, hf_init);
  const ImageBatch batch = random_images(config, kBatch, 1);
  const double forward = vit_work(config, kBatch, StepKind::Forward).forward;
  const auto step_flops = [&](Vit<cpu, A>& m) {
    return mode == Mode::Full ? vit_work(config, kBatch, StepKind::FullDelta).step
                              : vit_work(config, kBatch, StepKind::LowRank, adapter_extent(m)).step;
  };
  if constexpr (std::same_as<A, Lora<cpu>>)
    run_case(state, model, batch, mode, kLoraTargets, make_lora, forward, step_flops);
  if constexpr (std::same_as<A, PartialLora<cpu>>)
    run_case(state, model, batch, mode, kLoraTargets, make_partial, forward, step_flops);
  if constexpr (std::same_as<A, FullDelta<cpu>>)
    run_case(state, model, batch, mode, kAllLinear, make_full, forward, step_flops);
}

void vit_b16_forward(benchmark::State& s) { vit_case<Lora<cpu>>(s, vit_base_config(), Mode::Forward); }
void vit_b16_lora(benchmark::State& s) { vit_case<Lora<cpu>>(s, vit_base_config(), Mode::Lora); }
void vit_b16_partial13(benchmark::State& s) { vit_case<PartialLora<cpu>>(s, vit_base_config(), Mode::Partial); }
void vit_b16_full(benchmark::State& s) { vit_case<FullDelta<cpu>>(s, vit_base_config(), Mode::Full); }
void vit_s16_forward(benchmark::State& s) { vit_case<Lora<cpu>>(s, vit_small_config(), Mode::Forward); }
void vit_s16_lora(benchmark::State& s) { vit_case<Lora<cpu>>(s, vit_small_config(), Mode::Lora); }
void vit_s16_partial13(benchmark::State& s) { vit_case<PartialLora<cpu>>(s, vit_small_config(), Mode::Partial); }
void vit_s16_full(benchmark::State& s) { vit_case<FullDelta<cpu>>(s, vit_small_config(), Mode::Full); }
}  // namespace

// Seconds per iteration on 2 cores: about 1 (forward) to 4 (full); 5 timed
// iterations after the validation / warm-up give the median.
#define PLORA_MODEL_BENCHMARK(fn) BENCHMARK(fn)->Iterations(5)->UseRealTime()->Unit(benchmark::kMillisecond)
PLORA_MODEL_BENCHMARK(vit_b16_forward);
PLORA_MODEL_BENCHMARK(vit_b16_lora);
PLORA_MODEL_BENCHMARK(vit_b16_partial13);
PLORA_MODEL_BENCHMARK(vit_b16_full);
PLORA_MODEL_BENCHMARK(vit_s16_forward);
PLORA_MODEL_BENCHMARK(vit_s16_lora);
PLORA_MODEL_BENCHMARK(vit_s16_partial13);
PLORA_MODEL_BENCHMARK(vit_s16_full);
BENCHMARK_MAIN();
