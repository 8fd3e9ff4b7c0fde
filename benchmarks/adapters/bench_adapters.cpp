// Adapter forward + backward on one linear site: dense LoRA against
// Partial-LoRA at ΔW densities 1, 0.5, 0.25, 0.13 (balanced sqrt split), for
// the ViT-B/16 shapes 768x768 and 3072x768 with 8 x 197 tokens, r = 8, and the
// memory-traffic floor those shapes put under any in-place adapter.
// Partial runs in its default host tiles; one_pass:1 runs all tokens as one
// tile for comparison. compact_lora times Partial's compact products alone.
// Counters: adapter GEMM FLOPs; for Partial, the fraction of the 64-byte lines
// of a row of x (lines_x) and of y (lines_y) that hold a kept column — the part
// of each activation a column gather or scatter must move; the floor's bytes.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <set>
#include <stdexcept>
#include <vector>

#include "adapter_work.hpp"
#include "plora/adapters/lora.hpp"
#include "plora/adapters/partial.hpp"
#include "plora/backend/cpu/cpu.hpp"
#include "plora/masks/bernoulli.hpp"

namespace {
using namespace plora;
using plora::bench::adapter_flops;
constexpr Index kTokens = 8 * 197;
constexpr Index kRank = 8;

HostMatrix random_host(Index rows, Index cols, std::uint64_t seed) {
  HostMatrix m(rows, cols);
  RandomStream rng(seed, 0);
  for (auto& v : m.values()) v = rng.uniform(-1.0f, 1.0f);
  return m;
}

/// Fraction of the 16-float (64-byte) groups of a `width`-float row that hold a kept index.
double touched_line_fraction(const std::vector<std::int32_t>& kept, Index width) {
  constexpr Index floats_per_line = 64 / sizeof(float);
  std::set<Index> lines;
  for (const std::int32_t i : kept) lines.insert(i / floats_per_line);
  return static_cast<double>(lines.size()) / static_cast<double>((width + floats_per_line - 1) / floats_per_line);
}

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
  state.counters["FLOPs"] =
      benchmark::Counter(adapter_flops(kTokens, kRank, out, in), benchmark::Counter::kIsIterationInvariantRate);
}

/// The Partial mask of the (out, in, density%) arguments, the same for every case.
RowColMask bench_mask(const benchmark::State& state) {
  const double density = static_cast<double>(state.range(2)) / 100.0;
  return PartialMask{}.sample({.out = state.range(0), .in = state.range(1), .ratio = density, .seed = 7, .stream = 1});
}

void partial_lora(benchmark::State& state) {
  const Index out = state.range(0), in = state.range(1);
  const RowColMask mask = bench_mask(state);
  PartialLora<cpu> partial(out, in, {.inner = {.rank = kRank, .alpha = 16}, .kept_rows = mask.rows, .kept_cols = mask.cols},
                           RandomStream(0, 1));
  if (state.range(3) != 0) partial.set_tile_tokens(0);
  run(state, partial, out, in);
  const auto rows = static_cast<Index>(mask.rows.size()), cols = static_cast<Index>(mask.cols.size());
  state.counters["density"] = static_cast<double>(rows * cols) / static_cast<double>(out * in);
  state.counters["tile"] = static_cast<double>(partial.tile_tokens());
  state.counters["lines_x"] = touched_line_fraction(mask.cols, in);
  state.counters["lines_y"] = touched_line_fraction(mask.rows, out);
  state.counters["FLOPs"] =
      benchmark::Counter(adapter_flops(kTokens, kRank, rows, cols), benchmark::Counter::kIsIterationInvariantRate);
}

/// Partial's compact products alone: a dense LoRA of the kept shape (|R| x
/// |C|) on compact activations, without the gathers and scatter-adds, from
/// the same mask as partial_lora's. Partial's time minus this is what its
/// gathers, scatter-adds and tiling cost.
void compact_lora(benchmark::State& state) {
  const RowColMask mask = bench_mask(state);
  const auto rows = static_cast<Index>(mask.rows.size()), cols = static_cast<Index>(mask.cols.size());
  Lora<cpu> lora(rows, cols, LoraConfig{.rank = kRank, .alpha = 16}, RandomStream(0, 1));
  run(state, lora, rows, cols);
  state.counters["FLOPs"] =
      benchmark::Counter(adapter_flops(kTokens, kRank, rows, cols), benchmark::Counter::kIsIterationInvariantRate);
}

/// The memory-traffic floor of an in-place adapter at (out x in): one streaming
/// pass that reads x and reads + writes y (forward), one that reads dy and x and
/// reads + writes dx (backward), with one multiply-add per element. Dense LoRA
/// and a Partial whose random kept columns hit every line (lines_x, lines_y ~ 1)
/// must move at least this much; Partial's copy of x[:, C] kept from the forward
/// replaces backward's read of x by a write and a read of |C| / in of it.
/// Needs out to be a multiple of in (the benchmarked shapes), so that x's row
/// is read once and reused from L1 across y's row, and dy's row folds onto dx's.
void traffic_floor(benchmark::State& state) {
  const Index out = state.range(0), in = state.range(1);
  if (out % in != 0) throw std::logic_error("traffic_floor needs out to be a multiple of in");
  const HostMatrix x = random_host(kTokens, in, 1), dy = random_host(kTokens, out, 2);
  HostMatrix y(kTokens, out), dx(kTokens, in);
  constexpr float c = 1e-3f;
  const auto pass = [&] {
    for (Index t = 0; t < kTokens; ++t) {  // forward: y[t, b·in + j] += c · x[t, j]
      const float* __restrict xt = x.data() + t * in;
      float* __restrict yt = y.data() + t * out;
      for (Index b = 0; b < out; b += in)
        for (Index j = 0; j < in; ++j) yt[b + j] += c * xt[j];
    }
    for (Index t = 0; t < kTokens; ++t) {  // backward: dx[t, j] += c · (x[t, j] + Σ_b dy[t, b·in + j])
      const float* __restrict xt = x.data() + t * in;
      const float* __restrict dyt = dy.data() + t * out;
      float* __restrict dxt = dx.data() + t * in;
      for (Index j = 0; j < in; ++j) dxt[j] += c * xt[j];
      for (Index b = 0; b < out; b += in)
        for (Index j = 0; j < in; ++j) dxt[j] += c * dyt[b + j];
    }
  };
  // Validate once from zeros: the last token's last outputs. y is one rounding
  // of c·x; dx sums out/in + 1 <= 5 terms of size <= c, so float rounding
  // stays below 5 · 2^-24 · 5c ≈ 1.5e-9 (a missing term is ~1e-3).
  pass();
  const Index t = kTokens - 1, j = in - 1;
  double expected_dx = x(t, j);
  for (Index b = 0; b < out; b += in) expected_dx += dy(t, b + j);
  if (std::abs(y(t, out - 1) - c * x(t, j)) > 1e-6 * std::abs(c * x(t, j)) ||
      std::abs(dx(t, j) - c * expected_dx) > 1e-8)
    throw std::logic_error("traffic_floor computed the wrong sums");
  for (auto _ : state) {
    pass();
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(dx.data());
    benchmark::ClobberMemory();
  }
  // Forward: x read, y read + written; backward: dy read, x read, dx read + written.
  const Index floats_per_token = (in + 2 * out) + (out + 3 * in);
  const double bytes = sizeof(float) * static_cast<double>(kTokens * floats_per_token);
  state.counters["bytes"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
}
}  // namespace

BENCHMARK(traffic_floor)->Args({768, 768})->Args({3072, 768})->Unit(benchmark::kMicrosecond);
BENCHMARK(dense_lora)->Args({768, 768})->Args({3072, 768})->Unit(benchmark::kMicrosecond);
BENCHMARK(partial_lora)
    ->ArgNames({"out", "in", "density%", "one_pass"})
    ->ArgsProduct({{768}, {768}, {100, 50, 25, 13}, {0}})
    ->ArgsProduct({{3072}, {768}, {100, 50, 25, 13}, {0}})
    ->ArgsProduct({{768, 3072}, {768}, {13}, {1}})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(compact_lora)
    ->ArgNames({"out", "in", "density%"})
    ->ArgsProduct({{768, 3072}, {768}, {13}})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_MAIN();
