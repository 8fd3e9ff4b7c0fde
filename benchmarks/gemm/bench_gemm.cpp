// The roofline: plain fp32 GEMM C = A B^T through plora::cpu::gemm at the
// ViT-B/16 shapes of a batch of 8 images (1576 tokens): q/k/v/o projections
// (1576 x 768 x 768), MLP up (1576 x 3072 x 768) and MLP down
// (1576 x 768 x 3072). Its GFLOP/s is the practical peak the model benchmarks
// compare their GEMM work against. Eigen's own kernel unless the build has
// PLORA_USE_OPENBLAS=ON or PLORA_USE_MKL=ON (cblas_sgemm); the kernel that ran is printed and
// stored in the benchmark context ("gemm_kernel"). fma_peak measures the
// arithmetic ceiling above both: the cores' fused multiply-add rate.
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>


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

#if defined(__AVX512F__) || defined(__FMA__)
#if defined(__AVX512F__)
using Lanes = __m512;
constexpr int kLanes = 16;
constexpr int kChains = 24;  // of 32 vector registers
inline Lanes splat(float x) { return _mm512_set1_ps(x); }
inline Lanes fused_multiply_add(Lanes a, Lanes b, Lanes c) { return _mm512_fmadd_ps(a, b, c); }
inline void store(float* out, Lanes v) { _mm512_storeu_ps(out, v); }
#else
using Lanes = __m256;
constexpr int kLanes = 8;
constexpr int kChains = 12;  // of 16 vector registers: more would spill to the stack
inline Lanes splat(float x) { return _mm256_set1_ps(x); }
inline Lanes fused_multiply_add(Lanes a, Lanes b, Lanes c) { return _mm256_fmadd_ps(a, b, c); }
inline void store(float* out, Lanes v) { _mm256_storeu_ps(out, v); }
#endif

/// Every OpenMP thread runs kChains independent chains of vector FMAs: enough
/// chains to hide the FMA latency (4-5 cycles) on two ports, few enough to
/// stay in registers with the two operands, no memory traffic. Its rate is
/// the cores' fp32 arithmetic peak, which no GEMM can pass.
void fma_peak(benchmark::State& state) {
  constexpr long kSteps = 1 << 20;
  const int threads = omp_get_max_threads();
  float checksum = 0.0f;
  for (auto _ : state) {
#pragma omp parallel num_threads(threads) reduction(+ : checksum)
    {
      Lanes acc[kChains];
      for (int i = 0; i < kChains; ++i) acc[i] = splat(0.001f * static_cast<float>(i));
      const Lanes a = splat(0.999999f), b = splat(1e-7f);
      for (long step = 0; step < kSteps; ++step)
#pragma GCC unroll kChains
        for (int i = 0; i < kChains; ++i) acc[i] = fused_multiply_add(acc[i], a, b);
      float lanes[kLanes];
      for (const Lanes& v : acc) {
        store(lanes, v);
        for (const float x : lanes) checksum += x;
      }
    }
  }
  benchmark::DoNotOptimize(checksum);
  state.counters["threads"] = threads;
  state.counters["FLOPs"] = benchmark::Counter(2.0 * kLanes * kChains * static_cast<double>(kSteps) * threads,
                                               benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(fma_peak)->UseRealTime()->Unit(benchmark::kMillisecond);
#endif
}  // namespace

BENCHMARK(sgemm)
    ->Args({1576, 768, 768})
    ->Args({1576, 3072, 768})
    ->Args({1576, 768, 3072})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) { return plora::bench::run_benchmarks(argc, argv); }
