// Whole-model steps on the GPU (plora::cuda) with random weights
// (transformers' init): ViT-B/16 at batch 64 (224 x 224) and DeBERTa-v3-base
// at batch 32 of 128 tokens:
//   forward       eval forward only
//   lora          LoRA training step: r = 8, alpha 16 on the query and value
//                 projections, head trained, AdamW (zero_grad + forward +
//                 backward + update)
//   partial13     the same with Partial-LoRA at ΔW density 0.13 (balanced
//                 Bernoulli row / column masks, METHOD.md §1)
//   full          (ViT) full fine-tuning: FullDelta on every linear site + head
// in fp32, and the LoRA step also with TF32 and BF16 tensor-core GEMMs (fp32
// accumulation). Each case validates its model once before timing it, as the
// CPU model benchmarks do (model_case.hpp); the step's values against the CPU
// backend are test_cuda_models' business.
// Counters: median_s and min_s per step (the device drained before each clock
// read), TFLOPS (the step's GEMM work, bench_support.hpp's vit_work /
// deberta_work, over the median), MFU (TFLOPS / the device's dense peak for
// the math mode, device_peak.cuh), peak_device_MiB (the most memory plora's
// buffers held at once during the case, weights included), trainable
// parameters.
//   bench_cuda_models --benchmark_format=json --benchmark_out=<file>
#include <benchmark/benchmark.h>

#include <concepts>
#include <exception>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "device_peak.cuh"
#include "models/bench_support.hpp"
#include "models/model_case.hpp"
#include "plora/backend/cuda/cuda.cuh"
#include "plora/models/deberta_v2.hpp"
#include "plora/models/sites.hpp"
#include "plora/models/vit.hpp"

namespace {
using namespace plora;
using namespace plora::bench;
using plora::cuda;  // not CUDA's own namespace ::cuda

constexpr Index kVitBatch = 64;
constexpr Index kDebertaBatch = 32;
constexpr Index kSeqLen = 128;
const std::vector<std::string> kVitLoraTargets = {"query", "value"};
const std::vector<std::string> kVitAllLinear = {"query", "key", "value", "dense"};
const std::vector<std::string> kDebertaTargets = {"query_proj", "value_proj"};

/// Validates and times a built, adapted model; sets every counter but trainable.
template <class M>
void validate_and_time(benchmark::State& state, M& model, const typename M::Batch& batch, Mode mode,
                       double step_flops) {
  const HostMatrix logits = validate_forward(model, batch);
  if (mode != Mode::Forward) validate_gradients(model, batch, logits);
  const double med = time_model(state, model, batch, mode != Mode::Forward);
  const double tflops = step_flops / med / 1e12, peak = peak_tflops(cuda::math_mode());
  state.counters["TFLOPS"] = tflops;
  state.counters["MFU"] = peak > 0.0 ? tflops / peak : 0.0;
  state.counters["peak_device_MiB"] = static_cast<double>(cuda::memory_stats().peak_bytes_in_use) / (1 << 20);
}

/// Runs one case: a device check, a fresh memory peak, the math mode, and a
/// failed validation or a CUDA error reported as the case's error.
template <class Case>
void run_case(benchmark::State& state, cuda::MathMode math, Case body) {
  if (!require_device(state)) return;
  start_case();
  cuda::release_cached_memory();
  cuda::reset_peak_memory();
  const cuda::MathModeScope scope(math);
  try {
    body();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

template <class A>
void vit_case(benchmark::State& state, Mode mode, cuda::MathMode math = cuda::MathMode::Fp32) {
  run_case(state, math, [&] {
    const ViTConfig config = vit_base_config();
    Vit<cuda, A> model(config, hf_init);
    const ImageBatch batch = random_images(config, kVitBatch, 1);
    if (mode != Mode::Forward) {
      if constexpr (std::same_as<A, Lora<cuda>>) attach_adapters(model, std::span(kVitLoraTargets), make_lora<cuda>);
      if constexpr (std::same_as<A, PartialLora<cuda>>)
        attach_adapters(model, std::span(kVitLoraTargets), make_partial<cuda>);
      if constexpr (std::same_as<A, FullDelta<cuda>>) attach_adapters(model, std::span(kVitAllLinear), make_full<cuda>);
    }
    const double flops = timed_work(vit_work(config, kVitBatch, step_kind(mode), adapter_extent(model)), mode);
    validate_and_time(state, model, batch, mode, flops);
    state.counters["trainable"] = static_cast<double>(trainable_count(model).total());
  });
}

template <class A>
void deberta_case(benchmark::State& state, Mode mode, cuda::MathMode math = cuda::MathMode::Fp32) {
  run_case(state, math, [&] {
    const DebertaV2Config config = deberta_v3_base_config();
    DebertaV2<cuda, A> model(config, hf_init);
    const TokenBatch batch = random_tokens(config, kDebertaBatch, kSeqLen);
    if (mode != Mode::Forward) {
      if constexpr (std::same_as<A, Lora<cuda>>) attach_adapters(model, std::span(kDebertaTargets), make_lora<cuda>);
      if constexpr (std::same_as<A, PartialLora<cuda>>)
        attach_adapters(model, std::span(kDebertaTargets), make_partial<cuda>);
    }
    const double flops =
        timed_work(deberta_work(config, kDebertaBatch, kSeqLen, step_kind(mode), adapter_extent(model)), mode);
    validate_and_time(state, model, batch, mode, flops);
    state.counters["trainable"] = static_cast<double>(mode == Mode::Forward ? 0 : trainable_count(model).total());
  });
}

using M = cuda::MathMode;
void vit_b16_forward(benchmark::State& s) { vit_case<Lora<cuda>>(s, Mode::Forward); }
void vit_b16_lora(benchmark::State& s) { vit_case<Lora<cuda>>(s, Mode::Lora); }
void vit_b16_lora_tf32(benchmark::State& s) { vit_case<Lora<cuda>>(s, Mode::Lora, M::Tf32); }
void vit_b16_lora_bf16(benchmark::State& s) { vit_case<Lora<cuda>>(s, Mode::Lora, M::Bf16); }
void vit_b16_partial13(benchmark::State& s) { vit_case<PartialLora<cuda>>(s, Mode::Partial); }
void vit_b16_full(benchmark::State& s) { vit_case<FullDelta<cuda>>(s, Mode::Full); }
void deberta_v3_base_forward(benchmark::State& s) { deberta_case<Lora<cuda>>(s, Mode::Forward); }
void deberta_v3_base_lora(benchmark::State& s) { deberta_case<Lora<cuda>>(s, Mode::Lora); }
void deberta_v3_base_lora_tf32(benchmark::State& s) { deberta_case<Lora<cuda>>(s, Mode::Lora, M::Tf32); }
void deberta_v3_base_lora_bf16(benchmark::State& s) { deberta_case<Lora<cuda>>(s, Mode::Lora, M::Bf16); }
void deberta_v3_base_partial13(benchmark::State& s) { deberta_case<PartialLora<cuda>>(s, Mode::Partial); }
}  // namespace

// 10 timed steps after the validation and one untimed step give the median.
#define PLORA_GPU_MODEL_BENCHMARK(fn) BENCHMARK(fn)->Iterations(10)->UseRealTime()->Unit(benchmark::kMillisecond)
PLORA_GPU_MODEL_BENCHMARK(vit_b16_forward);
PLORA_GPU_MODEL_BENCHMARK(vit_b16_lora);
PLORA_GPU_MODEL_BENCHMARK(vit_b16_lora_tf32);
PLORA_GPU_MODEL_BENCHMARK(vit_b16_lora_bf16);
PLORA_GPU_MODEL_BENCHMARK(vit_b16_partial13);
PLORA_GPU_MODEL_BENCHMARK(vit_b16_full);
PLORA_GPU_MODEL_BENCHMARK(deberta_v3_base_forward);
PLORA_GPU_MODEL_BENCHMARK(deberta_v3_base_lora);
PLORA_GPU_MODEL_BENCHMARK(deberta_v3_base_lora_tf32);
PLORA_GPU_MODEL_BENCHMARK(deberta_v3_base_lora_bf16);
PLORA_GPU_MODEL_BENCHMARK(deberta_v3_base_partial13);
BENCHMARK_MAIN();
