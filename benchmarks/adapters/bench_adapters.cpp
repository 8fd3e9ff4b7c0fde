// Adapter forward + backward on one linear site: dense LoRA against
// Partial-LoRA at ΔW densities 1, 0.5, 0.25, 0.13 (balanced sqrt split), for
// the ViT-B/16 shapes 768x768 and 3072x768 with 8 x 197 tokens, r = 8.
// Counters: FLOPs and bytes touched per iteration by the adapter alone.
#include <benchmark/benchmark.h>

#include <cmath>
#include <stdexcept>

#include "plora/adapters/lora.hpp"
#include "plora/adapters/partial.hpp"
#include "plora/backend/cpu/cpu.hpp"
#include "plora/masks/bernoulli.hpp"

namespace {
using namespace plora;
constexpr Index kTokens = 8 * 197;
constexpr Index kRank = 8;

HostMatrix random_host(Index rows, Index cols, std::uint64_t seed) {
  HostMatrix m(rows, cols);
  RandomStream rng(seed, 0);
  for (auto& v : m.values()) v = rng.uniform(-1.0f, 1.0f);
  return m;
}

/// GEMM FLOPs of forward + backward for an adapter of kept (rows x cols):
/// forward 2T·r·(cols + rows); backward dB 2T·r·rows, dh 2T·r·rows,
/// dA 2T·r·cols, dx 2T·r·cols.
double adapter_flops(Index rows, Index cols) {
  return 2.0 * kTokens * kRank * (2.0 * rows + 2.0 * cols) + 2.0 * kTokens * kRank * (rows + cols);
}
/// Bytes of activations read and written: x[:, C] and dx[:, C], y[:, R] and dy[:, R].
double adapter_bytes(Index rows, Index cols) { return 4.0 * kTokens * 2.0 * (rows + cols); }

template <class AdapterT>
void run(benchmark::State& state, AdapterT& adapter, Index out, Index in) {
  const HostMatrix x = random_host(kTokens, in, 1), dy = random_host(kTokens, out, 2);
  HostMatrix y(kTokens, out), dx(kTokens, in);
  typename AdapterT::Saved saved;
  // Validate once: B starts at zero, so the adapter adds nothing to y.
  adapter.forward(y.view(), x.view(), saved);
  if (cpu::sum_squares(y.view()) != 0.0) throw std::logic_error("adapter with B = 0 changed y");
  for (auto _ : state) {
    adapter.forward(y.view(), x.view(), saved);
    adapter.backward(dx.view(), dy.view(), x.view(), saved);
    benchmark::DoNotOptimize(dx.data());
  }
}

void dense_lora(benchmark::State& state) {
  const Index out = state.range(0), in = state.range(1);
  Lora<cpu> lora(out, in, LoraConfig{.rank = kRank, .alpha = 16}, RandomStream(0, 1));
  run(state, lora, out, in);
  state.counters["density"] = 1.0;
  state.counters["FLOPs"] = benchmark::Counter(adapter_flops(out, in), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bytes"] = benchmark::Counter(adapter_bytes(out, in), benchmark::Counter::kIsIterationInvariantRate);
}

void partial_lora(benchmark::State& state) {
  const Index out = state.range(0), in = state.range(1);
  const double density = static_cast<double>(state.range(2)) / 100.0;
  const RowColMask mask = PartialMask{}.sample({.out = out, .in = in, .ratio = density, .seed = 7, .stream = 1});
  PartialLora<cpu> partial(out, in, {.inner = {.rank = kRank, .alpha = 16}, .kept_rows = mask.rows, .kept_cols = mask.cols},
                           RandomStream(0, 1));
  run(state, partial, out, in);
  const auto rows = static_cast<Index>(mask.rows.size()), cols = static_cast<Index>(mask.cols.size());
  state.counters["density"] = static_cast<double>(rows * cols) / static_cast<double>(out * in);
  state.counters["FLOPs"] = benchmark::Counter(adapter_flops(rows, cols), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bytes"] = benchmark::Counter(adapter_bytes(rows, cols), benchmark::Counter::kIsIterationInvariantRate);
}
}  // namespace

BENCHMARK(dense_lora)->Args({768, 768})->Args({3072, 768})->Unit(benchmark::kMicrosecond);
BENCHMARK(partial_lora)
    ->ArgsProduct({{768}, {768}, {100, 50, 25, 13}})
    ->ArgsProduct({{3072}, {768}, {100, 50, 25, 13}})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_MAIN();
