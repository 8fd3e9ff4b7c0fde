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

#include <concepts>
#include <span>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "gemm_kernel.hpp"
#include "model_case.hpp"
#include "plora/models/sites.hpp"
#include "plora/models/vit.hpp"

namespace {
using namespace plora;
using namespace plora::bench;

const std::vector<std::string> kLoraTargets = {"query", "value"};
const std::vector<std::string> kAllLinear = {"query", "key", "value", "dense"};

/// One case: build, attach, validate (the checks at the top of the file),
/// time, and count its GEMM work.
template <class A>
void vit_case(benchmark::State& state, const ViTConfig& config, Mode mode) {
  start_case();
  sgemm_peak_gflops();  // measured once per process, before the case's model exists
  Vit<cpu, A> model(config, hf_init);
  const ImageBatch batch = random_images(config, kBatch, 1);
  if (mode != Mode::Forward) {
    if constexpr (std::same_as<A, Lora<cpu>>) attach_adapters(model, std::span(kLoraTargets), make_lora<cpu>);
    if constexpr (std::same_as<A, PartialLora<cpu>>) attach_adapters(model, std::span(kLoraTargets), make_partial<cpu>);
    if constexpr (std::same_as<A, FullDelta<cpu>>) attach_adapters(model, std::span(kAllLinear), make_full<cpu>);
  }

  const HostMatrix logits = validate_forward(model, batch);
  if (mode != Mode::Forward) validate_gradients(model, batch, logits);
  const double flops = timed_work(vit_work(config, kBatch, step_kind(mode), adapter_extent(model)), mode);
  const double med = time_model(state, model, batch, mode != Mode::Forward);
  state.counters["trainable"] = static_cast<double>(trainable_count(model).total());
  state.counters["GFLOP"] = flops / 1e9;
  state.counters["GFLOP/s"] = flops / med / 1e9;
  state.counters["peak_fraction"] = flops / med / 1e9 / sgemm_peak_gflops();
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
int main(int argc, char** argv) { return plora::bench::run_benchmarks(argc, argv); }
