#pragma once
// The harness the model benchmarks share (bench_vit and bench_deberta on the
// CPU, bench_cuda_models on the GPU), around their model-specific setup: the
// adapters of their cases, the validation every model passes before it is
// timed, and the timing of eval forwards or AdamW training steps with the
// counters median_s, min_s and peak_RSS_MiB. Generic over the backend; nothing
// here includes one.
#include <benchmark/benchmark.h>
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "plora/adapters/full_delta.hpp"
#include "plora/adapters/lora.hpp"
#include "plora/adapters/partial.hpp"
#include "plora/masks/bernoulli.hpp"
#include "plora/train/adamw.hpp"

namespace plora::bench {

constexpr Index kBatch = 8;
constexpr LoraConfig kLora{.rank = 8, .alpha = 16};
constexpr double kPartialDensity = 0.13;
constexpr std::uint64_t kMaskSeed = 7;

enum class Mode { Forward, Lora, Partial, Full };

/// The step a mode times, as vit_work / deberta_work count it.
inline StepKind step_kind(Mode mode) {
  if (mode == Mode::Forward) return StepKind::Forward;
  return mode == Mode::Full ? StepKind::FullDelta : StepKind::LowRank;
}
/// The GEMM work of one timed iteration of `mode`.
inline double timed_work(const StepWork& work, Mode mode) { return mode == Mode::Forward ? work.forward : work.step; }

/// The balanced Bernoulli row / column mask of `site` at ΔW density kPartialDensity (METHOD.md §1).
inline RowColMask partial_mask(const std::string& site, Index out, Index in) {
  return PartialMask{}.sample(
      {.out = out, .in = in, .ratio = kPartialDensity, .seed = kMaskSeed, .stream = stream_id(site), .site = site});
}
template <Backend B>
Lora<B> make_lora(const std::string& site, Index out, Index in) {
  return Lora<B>(out, in, kLora, RandomStream(0, stream_id(site)));
}
template <Backend B>
PartialLora<B> make_partial(const std::string& site, Index out, Index in) {
  const RowColMask mask = partial_mask(site, out, in);
  return PartialLora<B>(out, in, {.inner = kLora, .kept_rows = mask.rows, .kept_cols = mask.cols},
                        RandomStream(0, stream_id(site)));
}
template <Backend B>
FullDelta<B> make_full(const std::string&, Index out, Index in) {
  return FullDelta<B>(out, in, {}, RandomStream(0, 0));
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

inline void require(bool ok, const std::string& what) {
  if (!ok) throw std::logic_error("validation failed: " + what);
}

/// Naive mean cross-entropy of host logits, in double.
inline double naive_cross_entropy(const HostMatrix& logits, const std::vector<std::int32_t>& labels) {
  double total = 0.0;
  for (Index r = 0; r < logits.rows(); ++r) {
    double max = logits(r, 0), sum = 0.0;
    for (Index c = 0; c < logits.cols(); ++c) max = std::max(max, static_cast<double>(logits(r, c)));
    for (Index c = 0; c < logits.cols(); ++c) sum += std::exp(logits(r, c) - max);
    total += std::log(sum) + max - logits(r, labels[static_cast<std::size_t>(r)]);
  }
  return total / static_cast<double>(logits.rows());
}

/// Logits finite and bit-identical on a second forward; returns them.
template <class M>
HostMatrix validate_forward(M& model, const typename M::Batch& batch) {
  using B = typename M::BackendType;
  HostMatrix logits = to_host<B>(model.forward(batch));
  require(std::ranges::all_of(logits.values(), [](float v) { return std::isfinite(v); }), "logits are not finite");
  const HostMatrix again = to_host<B>(model.forward(batch));
  require(logits.values() == again.values(), "two forwards of one batch differ");
  return logits;
}

/// The training step's loss equals a naive cross-entropy of `logits` (the
/// model's forward of `batch`), lora_A gradients are exactly zero while lora_B
/// is zero and every other gradient is non-zero; leaves gradients zeroed.
template <class M>
void validate_gradients(M& model, const typename M::Batch& batch, const HostMatrix& logits) {
  model.zero_grad();
  const double loss = model.forward_backward(batch);
  // fp32 log-softmax over a handful of O(1) or smaller logits: relative error <= ~1e-6; 1e-4 leaves margin.
  const double expected = naive_cross_entropy(logits, batch.labels);
  require(std::abs(loss - expected) <= 1e-4 * std::max(1.0, expected),
          "loss " + std::to_string(loss) + " vs naive cross-entropy " + std::to_string(expected));
  for (const auto& p : model.parameters()) {
    const double g = M::BackendType::sum_squares(p.grad);
    require(std::isfinite(g), p.name + " gradient is not finite");
    if (p.name.ends_with("lora_A"))
      require(g == 0.0, p.name + " gradient must be exactly zero while lora_B is zero");
    else
      require(g > 0.0, p.name + " gradient is zero");
  }
  model.zero_grad();
}

/// Start of a case, before its model exists: hands freed memory of earlier
/// cases back and resets the peak-RSS mark, so peak_RSS_MiB is this case's.
inline void start_case() {
  malloc_trim(0);
  if (!reset_peak_rss()) std::fprintf(stderr, "note: cannot reset the peak-RSS mark; peak_RSS_MiB is the process's\n");
}

/// Times a built, adapted and validated model, one call per benchmark
/// iteration: eval forwards, or training steps (zero_grad, forward_backward,
/// AdamW lr 1e-3) after one untimed step (the optimizer allocates its moments
/// on its first step). A backend with a device queue (B::synchronize) is
/// drained before each clock read. Sets median_s, min_s and peak_RSS_MiB;
/// returns the median seconds.
template <class M>
double time_model(benchmark::State& state, M& model, const typename M::Batch& batch, bool training) {
  using B = typename M::BackendType;
  AdamW<B> optimizer(AdamWConfig{.lr = 1e-3});
  ParameterList<typename B::Space> params = model.parameters();
  const auto drain = [] {
    if constexpr (requires { B::synchronize(); }) B::synchronize();
  };
  const auto step = [&] {
    model.zero_grad();
    benchmark::DoNotOptimize(model.forward_backward(batch));
    optimizer.step(params);
  };
  model.set_training(training);
  if (training) step();
  drain();

  std::vector<double> seconds;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    if (training)
      step();
    else
      benchmark::DoNotOptimize(model.forward(batch).data);
    drain();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  const double med = median(seconds);
  state.counters["median_s"] = med;
  state.counters["min_s"] = *std::min_element(seconds.begin(), seconds.end());
  state.counters["peak_RSS_MiB"] = peak_rss_mib();
  return med;
}

}  // namespace plora::bench
