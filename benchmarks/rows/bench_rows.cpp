// The row-wise kernels of a ViT-B/16 forward and backward (batch 8, 197
// tokens, 12 heads): what a layer spends besides its GEMMs. Softmax over the
// attention scores (8 * 12 * 197 rows of 197), LayerNorm over the hidden
// states (1576 x 768) and GELU over the MLP's inner activations
// (1576 x 3072), and Partial's column gather and scatter-add over a hidden
// state at the keep fractions of densities 1, 0.5, 0.25 and 0.13 (each side
// keeps sqrt(density); and 0.13 with the columns-only split). Each reports
// its memory traffic as bytes per second, with every operand read or written
// once: the lower bound of any kernel doing the same work (random kept
// columns touch nearly every cache line of the wide side, so a gather reads
// all of it and a scatter-add reads and writes all of it).
#include <benchmark/benchmark.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "gemm_kernel.hpp"
#include "plora/backend/cpu/cpu.hpp"
#include "plora/core/rng.hpp"
#include "plora/masks/bernoulli.hpp"

namespace {
using namespace plora;

constexpr Index kTokens = 197, kBatch = 8, kHeads = 12, kHidden = 768, kInner = 3072;
constexpr Index kRows = kBatch * kTokens;

HostMatrix random_host(Index rows, Index cols, std::uint64_t seed, float scale = 1.0f) {
  HostMatrix m(rows, cols);
  RandomStream rng(seed, 0);
  for (auto& v : m.values()) v = rng.uniform(-scale, scale);
  return m;
}

/// Throws unless |got - want| <= tolerance at every sampled row (a cheap
/// once-per-benchmark check that the timed kernel computes what it should).
void expect_close(double got, double want, double tolerance, const std::string& what) {
  if (!(std::abs(got - want) <= tolerance))
    throw std::logic_error(what + ": got " + std::to_string(got) + ", expected " + std::to_string(want));
}

double row_sum(const HostMatrix& m, Index row) {
  double sum = 0.0;
  for (Index c = 0; c < m.cols(); ++c) sum += m(row, c);
  return sum;
}

void count_bytes(benchmark::State& state, double bytes) {
  state.counters["bytes"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
}

void softmax_forward(benchmark::State& state) {
  const HostMatrix scores = random_host(kBatch * kHeads * kTokens, kTokens, 1, 8.0f);
  HostMatrix probs = scores;
  cpu::softmax_rows(probs.view());
  // Row sums are 1 within k * 2^-24 rounding; entry 0 against a double-precision softmax.
  for (const Index r : {Index{0}, probs.rows() - 1}) {
    double denominator = 0.0, max = -1e30;
    for (Index c = 0; c < kTokens; ++c) max = std::max(max, static_cast<double>(scores(r, c)));
    for (Index c = 0; c < kTokens; ++c) denominator += std::exp(scores(r, c) - max);
    expect_close(row_sum(probs, r), 1.0, 1e-5, "softmax row sum");
    expect_close(probs(r, 0), std::exp(scores(r, 0) - max) / denominator, 1e-6, "softmax entry");
  }
  // In place, so each pass normalises the last one's output: the same work
  // (max, exp, sum, scale) on other values.
  for (auto _ : state) {
    cpu::softmax_rows(probs.view());
    benchmark::DoNotOptimize(probs.data());
  }
  count_bytes(state, 2.0 * sizeof(float) * static_cast<double>(probs.size()));
}

void softmax_backward(benchmark::State& state) {
  HostMatrix probs = random_host(kBatch * kHeads * kTokens, kTokens, 1, 8.0f);
  cpu::softmax_rows(probs.view());
  const HostMatrix d_probs = random_host(probs.rows(), kTokens, 2);
  HostMatrix d_scores(probs.rows(), kTokens);
  for (auto _ : state) {
    cpu::softmax_rows_backward(d_scores.view(), probs.view(), d_probs.view());
    benchmark::DoNotOptimize(d_scores.data());
  }
  // Every row of dx = y (dy - <dy, y>) sums to 0 (as sum y = 1).
  expect_close(row_sum(d_scores, 0), 0.0, 1e-5, "softmax backward row sum");
  count_bytes(state, 3.0 * sizeof(float) * static_cast<double>(probs.size()));
}

void layernorm_forward(benchmark::State& state) {
  const HostMatrix x = random_host(kRows, kHidden, 3, 4.0f), gamma = random_host(1, kHidden, 4),
                   beta = random_host(1, kHidden, 5);
  HostMatrix y(kRows, kHidden), stats(kRows, 2);
  for (auto _ : state) {
    cpu::layernorm_forward(y.view(), stats.view(), x.view(), gamma.view(), beta.view(), 1e-12f);
    benchmark::DoNotOptimize(y.data());
  }
  expect_close(stats(7, 0), row_sum(x, 7) / kHidden, 1e-5, "layernorm mean");
  count_bytes(state, 2.0 * sizeof(float) * static_cast<double>(x.size()));
}

void layernorm_backward(benchmark::State& state) {
  const HostMatrix x = random_host(kRows, kHidden, 3, 4.0f), gamma = random_host(1, kHidden, 4),
                   beta = random_host(1, kHidden, 5), dy = random_host(kRows, kHidden, 6);
  HostMatrix y(kRows, kHidden), stats(kRows, 2), dx(kRows, kHidden);
  cpu::layernorm_forward(y.view(), stats.view(), x.view(), gamma.view(), beta.view(), 1e-12f);
  for (auto _ : state) {
    cpu::layernorm_backward(dx.view(), {}, {}, dy.view(), x.view(), stats.view(), gamma.view());
    benchmark::DoNotOptimize(dx.data());
  }
  // dx is orthogonal to the ones vector: LayerNorm's output ignores a shift of x.
  expect_close(row_sum(dx, 7), 0.0, 1e-3, "layernorm backward row sum");
  count_bytes(state, 3.0 * sizeof(float) * static_cast<double>(x.size()));
}

void gelu_forward(benchmark::State& state) {
  const HostMatrix x = random_host(kRows, kInner, 7, 4.0f);
  HostMatrix y(kRows, kInner);
  for (auto _ : state) {
    cpu::gelu_forward(y.view(), x.view());
    benchmark::DoNotOptimize(y.data());
  }
  const double x0 = x(3, 5);
  expect_close(y(3, 5), 0.5 * x0 * (1.0 + std::erf(x0 / std::sqrt(2.0))), 1e-5, "gelu");
  count_bytes(state, 2.0 * sizeof(float) * static_cast<double>(x.size()));
}

void gelu_backward(benchmark::State& state) {
  const HostMatrix x = random_host(kRows, kInner, 7, 4.0f), dy = random_host(kRows, kInner, 8);
  HostMatrix dx(kRows, kInner);
  for (auto _ : state) {
    cpu::gelu_backward(dx.view(), dy.view(), x.view());
    benchmark::DoNotOptimize(dx.data());
  }
  const double x0 = x(3, 5);
  const double slope = 0.5 * (1.0 + std::erf(x0 / std::sqrt(2.0))) + x0 * std::exp(-0.5 * x0 * x0) / std::sqrt(2.0 * M_PI);
  expect_close(dx(3, 5), dy(3, 5) * slope, 1e-5, "gelu backward");
  count_bytes(state, 3.0 * sizeof(float) * static_cast<double>(x.size()));
}

/// Each side's keep fraction at densities 1, 0.5, 0.25 and 0.13 under the
/// balanced split, and the columns-only split's at 0.13.
void keep_fractions(benchmark::internal::Benchmark* bench) {
  bench->ArgName("keep%");
  for (const int keep : {100, 71, 50, 36, 13}) bench->Arg(keep);
}

/// Columns of a kHidden-wide row kept with probability keep% / 100: the
/// Bernoulli mask's own draw, ascending.
cpu::Indices kept_columns(benchmark::State& state) {
  const double keep = static_cast<double>(state.range(0)) / 100.0;
  return cpu::make_indices(detail::bernoulli_keep(kHidden, keep, 9, 0, 0));
}

void column_gather(benchmark::State& state) {
  const cpu::Indices kept = kept_columns(state);
  const auto count = static_cast<Index>(kept.size());
  const HostMatrix wide = random_host(kRows, kHidden, 10);
  HostMatrix compact(kRows, count);
  for (auto _ : state) {
    cpu::gather_cols(compact.view(), wide.view(), kept);
    benchmark::DoNotOptimize(compact.data());
  }
  for (const Index r : {Index{0}, kRows - 1})
    for (Index j = 0; j < count; ++j) expect_close(compact(r, j), wide(r, kept[j]), 0.0, "column gather");
  count_bytes(state, sizeof(float) * static_cast<double>(kRows * (kHidden + count)));
}

void column_scatter_add(benchmark::State& state) {
  const cpu::Indices kept = kept_columns(state);
  const auto count = static_cast<Index>(kept.size());
  const HostMatrix compact = random_host(kRows, count, 11);
  HostMatrix wide(kRows, kHidden);
  // One add onto zeros: the kept columns hold 0.5 * compact, the others stay 0.
  cpu::scatter_add_cols(wide.view(), compact.view(), kept, 0.5f);
  for (const Index r : {Index{0}, kRows - 1}) {
    double kept_sum = 0.0;
    for (Index j = 0; j < count; ++j) {
      expect_close(wide(r, kept[j]), 0.5 * compact(r, j), 0.0, "column scatter-add");
      kept_sum += wide(r, kept[j]);
    }
    expect_close(row_sum(wide, r), kept_sum, 1e-4, "column scatter-add leaves the other columns");
  }
  for (auto _ : state) {
    cpu::scatter_add_cols(wide.view(), compact.view(), kept, 0.5f);
    benchmark::DoNotOptimize(wide.data());
  }
  count_bytes(state, sizeof(float) * static_cast<double>(kRows * (2 * kHidden + count)));
}
}  // namespace

BENCHMARK(softmax_forward)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(softmax_backward)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(layernorm_forward)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(layernorm_backward)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(gelu_forward)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(gelu_backward)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(column_gather)->Apply(keep_fractions)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(column_scatter_add)->Apply(keep_fractions)->UseRealTime()->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) { return plora::bench::run_benchmarks(argc, argv); }
