// The roofline: plain fp32 GEMM C = A B^T through plora::cpu::gemm at the
// ViT-B/16 shapes of a batch of 8 images (1576 tokens): q/k/v/o projections
// (1576 x 768 x 768), MLP up (1576 x 3072 x 768) and MLP down
// (1576 x 768 x 3072). Its GFLOP/s is the practical peak the model benchmarks
// compare their GEMM work against. Eigen's own kernel unless the build has
// PLORA_USE_OPENBLAS=ON (cblas_sgemm); the kernel that ran is printed and
// stored in the benchmark context ("gemm_kernel").
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "gemm_kernel.hpp"
#include "plora/backend/cpu/cpu.hpp"
#include "plora/core/rng.hpp"

namespace {
using namespace plora;

HostMatrix random_host(Index rows, Index cols, std::uint64_t seed) {
  HostMatrix m(rows, cols);
  RandomStream rng(seed, 0);
  for (auto& v : m.values()) v = rng.uniform(-1.0f, 1.0f);
  return m;
}

/// C (m x n) = A (m x k) B (n x k)^T, the layout of a linear layer's forward.
void sgemm(benchmark::State& state) {
  const Index m = state.range(0), n = state.range(1), k = state.range(2);
  const HostMatrix a = random_host(m, k, 1), b = random_host(n, k, 2);
  HostMatrix c(m, n);
  cpu::gemm(c.view(), a.view(), Op::N, b.view(), Op::T, 1.0f, 0.0f);
  // Validate once: a few entries against a naive double-precision dot product.
  // Rounding error of a k-term fp32 sum of products in [-1, 1]: below k * 2^-24 * |terms| <= 1e-3 here.
  for (const Index i : {Index{0}, m / 2, m - 1})
    for (const Index j : {Index{0}, n / 3, n - 1}) {
      double ref = 0.0;
      for (Index p = 0; p < k; ++p) ref += static_cast<double>(a(i, p)) * b(j, p);
      if (std::abs(ref - c(i, j)) > 1e-3 * std::sqrt(static_cast<double>(k)))
        throw std::logic_error("cpu::gemm disagrees with a naive dot product at (" + std::to_string(i) + ", " +
                               std::to_string(j) + ")");
    }
  for (auto _ : state) {
    cpu::gemm(c.view(), a.view(), Op::N, b.view(), Op::T, 1.0f, 0.0f);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["FLOPs"] =
      benchmark::Counter(2.0 * static_cast<double>(m * n * k), benchmark::Counter::kIsIterationInvariantRate);
}
}  // namespace

BENCHMARK(sgemm)
    ->Args({1576, 768, 768})
    ->Args({1576, 3072, 768})
    ->Args({1576, 768, 3072})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) { return plora::bench::run_benchmarks(argc, argv); }
