// DeBERTa-v3-base on the CPU with random weights (transformers' init): vocab
// 128100, hidden 768, 12 layers, 12 heads, intermediate 3072, relative
// attention c2p|p2c with shared keys and 256 position buckets; batch 8 of 128
// real tokens (the GLUE setting of the paper):
//   forward     eval forward only
//   lora        LoRA training step: r = 8, alpha 16 on query_proj + value_proj
//               (PEFT's default targets), pooler + classifier trained, AdamW
//               (zero_grad + forward + backward + update)
//   partial13   the same with Partial-LoRA at ΔW density 0.13 (balanced
//               Bernoulli row / column masks, METHOD.md §1)
// Counters: median_s and min_s per iteration, tokens_per_s (from the median),
// GFLOP (the GEMM work of one iteration, bench_support.hpp deberta_work),
// GFLOP/s from the median, peak_fraction = GFLOP/s / the SGEMM peak
// (sgemm_peak_gflops), trainable parameters, peak_RSS_MiB (the process's peak
// after a reset at the start of the case; run one case per process,
// --benchmark_filter, for a clean figure). Each case validates its model once before timing it (see
// validate()).
#include <benchmark/benchmark.h>

#include <concepts>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "gemm_kernel.hpp"
#include "model_case.hpp"
#include "plora/models/deberta_v2.hpp"
#include "plora/models/sites.hpp"

namespace {
using namespace plora;
using namespace plora::bench;

constexpr Index kSeqLen = 128;
const std::vector<std::string> kTargets = {"query_proj", "value_proj"};

/// Sequence i of `batch` alone.
TokenBatch single(const TokenBatch& batch, Index i) {
  TokenBatch b;
  b.batch = 1;
  b.seq_len = batch.seq_len;
  const auto first = batch.input_ids.begin() + i * batch.seq_len;
  b.input_ids.assign(first, first + batch.seq_len);
  b.attention_mask.assign(static_cast<std::size_t>(batch.seq_len), 1);
  b.labels = {batch.labels[static_cast<std::size_t>(i)]};
  return b;
}

/// Checks, once per case, with gradients left zeroed:
///  - logits finite and bit-identical on a second forward;
///  - sequences 0 and 5 alone give the logits they get inside the batch
///    (attention, relative positions and the pooler never mix sequences);
///  - training: the loss equals a naive cross-entropy of the logits, lora_A
///    gradients are exactly zero while lora_B is zero and every other gradient
///    is non-zero; the adapters hold r (|R| + |C|) scalars per site, with
///    |R|, |C| the mask's kept rows / columns drawn independently here, and
///    the Partial-LoRA masks keep about kPartialDensity of each ΔW.
template <class A>
void validate(DebertaV2<cpu, A>& model, const TokenBatch& batch, Mode mode) {
  const HostMatrix logits = validate_forward(model, batch);
  for (const Index i : {Index{0}, Index{5}}) {
    const HostMatrix alone = to_host<cpu>(model.forward(single(batch, i)));
    // Logits are O(0.05) (N(0, 0.02) classifier on an O(1) pooled vector);
    // a different GEMM blocking for 128 vs 1024 rows moves them by ~1e-6 in
    // fp32 over 12 layers. A batching bug moves them by the logits' own size.
    for (Index c = 0; c < logits.cols(); ++c)
      require(std::abs(alone(0, c) - logits(i, c)) <= 1e-4f,
              "sequence " + std::to_string(i) + " alone gives logit " + std::to_string(alone(0, c)) + ", in the batch " +
                  std::to_string(logits(i, c)));
  }
  if (mode == Mode::Forward) return;
  validate_gradients(model, batch, logits);

  Index expected_adapters = 0, adapters = 0;
  double density = 0.0;
  const std::vector<std::string> sites = matched_sites(model, std::span(kTargets));
  for (const auto& name : sites) {
    const auto& site = model.site(name);
    Index rows = site.out_features(), cols = site.in_features();
    if (mode == Mode::Partial) {
      const RowColMask mask = partial_mask(name, rows, cols);
      density += static_cast<double>(mask.rows.size() * mask.cols.size()) / static_cast<double>(rows * cols);
      rows = static_cast<Index>(mask.rows.size());
      cols = static_cast<Index>(mask.cols.size());
    }
    expected_adapters += kLora.rank * (rows + cols);
    adapters += site.adapter().trainable_count();
  }
  require(adapters == expected_adapters,
          std::to_string(adapters) + " adapter parameters, expected " + std::to_string(expected_adapters));
  if (mode == Mode::Partial) {
    // |R| ~ Binomial(768, sqrt(0.13)): relative sd 3.5% per factor, ~1% over 24 sites.
    density /= static_cast<double>(sites.size());
    require(std::abs(density - kPartialDensity) <= 0.1 * kPartialDensity,
            "mean kept density " + std::to_string(density) + ", expected about " + std::to_string(kPartialDensity));
  }
}

template <class A>
void deberta_case(benchmark::State& state, Mode mode) {
  start_case();
  sgemm_peak_gflops();  // measured once per process, before the case's model exists
  const DebertaV2Config config = deberta_v3_base_config();
  DebertaV2<cpu, A> model(config, hf_init);
  const TokenBatch batch = random_tokens(config, kBatch, kSeqLen);
  if (mode != Mode::Forward) {
    if constexpr (std::same_as<A, Lora<cpu>>) attach_adapters(model, std::span(kTargets), make_lora<cpu>);
    if constexpr (std::same_as<A, PartialLora<cpu>>) attach_adapters(model, std::span(kTargets), make_partial<cpu>);
  }
  validate(model, batch, mode);

  const double flops = timed_work(deberta_work(config, kBatch, kSeqLen, step_kind(mode), adapter_extent(model)), mode);
  const double med = time_model(state, model, batch, mode != Mode::Forward);
  state.counters["tokens_per_s"] = static_cast<double>(kBatch * kSeqLen) / med;
  state.counters["GFLOP"] = flops / 1e9;
  state.counters["GFLOP/s"] = flops / med / 1e9;
  state.counters["peak_fraction"] = flops / med / 1e9 / sgemm_peak_gflops();
  state.counters["trainable"] = static_cast<double>(mode == Mode::Forward ? 0 : trainable_count(model).total());
}

void deberta_v3_base_forward(benchmark::State& s) { deberta_case<Lora<cpu>>(s, Mode::Forward); }
void deberta_v3_base_lora(benchmark::State& s) { deberta_case<Lora<cpu>>(s, Mode::Lora); }
void deberta_v3_base_partial13(benchmark::State& s) { deberta_case<PartialLora<cpu>>(s, Mode::Partial); }
}  // namespace

// Seconds per iteration on 2 cores: about 1 (forward) to 3 (step); 5 timed
// iterations after the validation / warm-up give the median.
#define PLORA_DEBERTA_BENCHMARK(fn) BENCHMARK(fn)->Iterations(5)->UseRealTime()->Unit(benchmark::kMillisecond)
PLORA_DEBERTA_BENCHMARK(deberta_v3_base_forward);
PLORA_DEBERTA_BENCHMARK(deberta_v3_base_lora);
PLORA_DEBERTA_BENCHMARK(deberta_v3_base_partial13);
int main(int argc, char** argv) { return plora::bench::run_benchmarks(argc, argv); }
