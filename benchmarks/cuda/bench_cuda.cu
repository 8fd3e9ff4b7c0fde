// GPU microbenchmarks of plora::cuda. GEMM throughput at the ViT-Base linear
// shapes (8 images x 197 tokens = 1576 rows; c = x W^T as in LinearSite) in
// fp32, TF32 and BF16 against the device's theoretical peak, and the bandwidth
// of two row kernels against the memory's. Every benchmark first validates its
// result on the host, then times batches of launches with CUDA events.
//   bench_cuda --benchmark_format=json --benchmark_out=<file>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "plora/backend/cuda/cuda.cuh"
#include "plora/core/rng.hpp"

namespace plora {
namespace {

constexpr int kLaunchesPerIteration = 20;  // amortises the gaps between launches and events
constexpr int kValidationSamples = 64;

HostMatrix random_host(Index rows, Index cols, std::uint64_t seed) {
  HostMatrix m(rows, cols);
  RandomStream rng(seed, 0);
  for (auto& v : m.values()) v = rng.uniform(-1.0f, 1.0f);
  return m;
}

int device_attribute(cudaDeviceAttr attribute) {
  int device = 0, value = 0;
  PLORA_CUDA_CHECK(cudaGetDevice(&device));
  PLORA_CUDA_CHECK(cudaDeviceGetAttribute(&value, attribute, device));
  return value;
}

/// Dense peak in TFLOP/s at the reported maximum clock: SMs x clock x FLOP per
/// SM per clock, which on sm_90 (Hopper) is 256 for fp32 FMA on CUDA cores and
/// 2048 / 4096 for TF32 / BF16 on tensor cores. 0 on other architectures.
double peak_tflops(cuda::MathMode mode) {
  if (device_attribute(cudaDevAttrComputeCapabilityMajor) != 9) return 0.0;
  const double per_sm_clock = mode == cuda::MathMode::Fp32 ? 256.0 : mode == cuda::MathMode::Tf32 ? 2048.0 : 4096.0;
  return device_attribute(cudaDevAttrMultiProcessorCount) * device_attribute(cudaDevAttrClockRate) * 1e3 *
         per_sm_clock / 1e12;
}

/// Peak memory bandwidth in GB/s: double data rate x memory clock x bus width.
double peak_gbps() {
  return 2.0 * device_attribute(cudaDevAttrMemoryClockRate) * 1e3 *
         (device_attribute(cudaDevAttrGlobalMemoryBusWidth) / 8.0) / 1e9;
}

struct Events {
  Events() {
    PLORA_CUDA_CHECK(cudaEventCreate(&start));
    PLORA_CUDA_CHECK(cudaEventCreate(&stop));
  }
  Events(const Events&) = delete;
  Events& operator=(const Events&) = delete;
  ~Events() {
    static_cast<void>(cudaEventDestroy(start));
    static_cast<void>(cudaEventDestroy(stop));
  }
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
};

/// Runs the benchmark loop, timing kLaunchesPerIteration calls of `launch` per
/// iteration with events on the backend's stream; returns seconds per launch.
template <class Launch>
double time_launches(benchmark::State& state, Launch launch) {
  const Events events;
  double total = 0.0;
  for (auto _ : state) {
    PLORA_CUDA_CHECK(cudaEventRecord(events.start, cuda::stream()));
    for (int i = 0; i < kLaunchesPerIteration; ++i) launch();
    PLORA_CUDA_CHECK(cudaEventRecord(events.stop, cuda::stream()));
    PLORA_CUDA_CHECK(cudaEventSynchronize(events.stop));
    float ms = 0.0f;
    PLORA_CUDA_CHECK(cudaEventElapsedTime(&ms, events.start, events.stop));
    const double seconds = ms * 1e-3 / kLaunchesPerIteration;
    state.SetIterationTime(seconds);
    total += seconds;
  }
  return total / static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
}

bool require_device(benchmark::State& state) {
  if (cuda::available()) return true;
  state.SkipWithError(("no CUDA device: " + cuda::unavailable_reason()).c_str());
  return false;
}

/// Largest |got - expected| over sampled entries, relative to the largest |expected|.
template <class Expected>
double sampled_error(const HostMatrix& got, Expected expected) {
  RandomStream rng(99, 1);
  double worst = 0.0, scale = 0.0;
  for (int s = 0; s < kValidationSamples; ++s) {
    const Index r = rng.below(static_cast<std::uint32_t>(got.rows()));
    const Index c = rng.below(static_cast<std::uint32_t>(got.cols()));
    const double want = expected(r, c);
    worst = std::max(worst, std::abs(got(r, c) - want));
    scale = std::max(scale, std::abs(want));
  }
  return worst / std::max(scale, 1e-30);
}

/// c (m x n) = a (m x k) b^T, b (n x k).
void bm_gemm(benchmark::State& state, Index m, Index n, Index k, cuda::MathMode mode) {
  if (!require_device(state)) return;
  const HostMatrix ha = random_host(m, k, 1), hb = random_host(n, k, 2);
  const DeviceMatrix a = to_backend<cuda>(ha.view()), b = to_backend<cuda>(hb.view());
  DeviceMatrix c(m, n);
  cuda::set_math_mode(mode);
  const auto launch = [&] { cuda::gemm(c.view(), a.view(), Op::N, b.view(), Op::T, 1.0f, 0.0f); };
  launch();
  const double error = sampled_error(to_host<cuda>(c.view()), [&](Index i, Index j) {
    double dot = 0.0;
    for (Index p = 0; p < k; ++p) dot += double(ha(i, p)) * double(hb(j, p));
    return dot;
  });
  // fp32: the k eps worst case is 1.8e-4 for k = 3072, typical sqrt(k) eps ~ 3e-6. TF32 / BF16:
  // typical (random-walk) input rounding errors ~ 1e-4 / 3e-3.
  const double tolerance = mode == cuda::MathMode::Fp32 ? 1e-4 : mode == cuda::MathMode::Tf32 ? 1e-2 : 3e-2;
  if (!(error <= tolerance)) {
    cuda::set_math_mode(cuda::MathMode::Fp32);
    state.SkipWithError(("validation failed: relative error " + std::to_string(error)).c_str());
    return;
  }
  const double seconds = time_launches(state, launch);
  cuda::set_math_mode(cuda::MathMode::Fp32);
  const double tflops = 2.0 * double(m) * double(n) * double(k) / seconds / 1e12;
  const double peak = peak_tflops(mode);
  state.counters["TFLOPS"] = tflops;
  state.counters["peak_TFLOPS"] = peak;
  state.counters["fraction_of_peak"] = peak > 0.0 ? tflops / peak : 0.0;
  state.counters["validation_error"] = error;
}

void report_bandwidth(benchmark::State& state, double bytes, double seconds, double error) {
  const double gbps = bytes / seconds / 1e9, peak = peak_gbps();
  state.counters["GBps"] = gbps;
  state.counters["peak_GBps"] = peak;
  state.counters["fraction_of_peak"] = peak > 0.0 ? gbps / peak : 0.0;
  state.counters["validation_error"] = error;
}

/// ViT layernorm: (1576 x 768), reads x and writes y.
void bm_layernorm_forward(benchmark::State& state) {
  if (!require_device(state)) return;
  const Index rows = 1576, cols = 768;
  const HostMatrix hx = random_host(rows, cols, 3), hgamma = random_host(1, cols, 4), hbeta = random_host(1, cols, 5);
  const DeviceMatrix x = to_backend<cuda>(hx.view()), gamma = to_backend<cuda>(hgamma.view()),
                     beta = to_backend<cuda>(hbeta.view());
  DeviceMatrix y(rows, cols), stats(rows, 2);
  const auto launch = [&] { cuda::layernorm_forward(y.view(), stats.view(), x.view(), gamma.view(), beta.view(), 1e-6f); };
  launch();
  const double error = sampled_error(to_host<cuda>(y.view()), [&](Index r, Index c) {
    double mean = 0.0, var = 0.0;
    for (Index j = 0; j < cols; ++j) mean += hx(r, j);
    mean /= double(cols);
    for (Index j = 0; j < cols; ++j) var += (hx(r, j) - mean) * (hx(r, j) - mean);
    var /= double(cols);
    return (hx(r, c) - mean) / std::sqrt(var + 1e-6) * hgamma(0, c) + hbeta(0, c);
  });
  if (!(error <= 1e-5)) {  // 768-term float reductions: ~1e-7 relative
    state.SkipWithError(("validation failed: relative error " + std::to_string(error)).c_str());
    return;
  }
  report_bandwidth(state, 2.0 * double(rows * cols) * sizeof(float), time_launches(state, launch), error);
}

/// ViT attention probabilities: 8 images x 12 heads x 197 queries, 197 keys, in place.
void bm_softmax_rows(benchmark::State& state) {
  if (!require_device(state)) return;
  const Index rows = 8 * 12 * 197, cols = 197;
  const HostMatrix hx = random_host(rows, cols, 6);
  DeviceMatrix x = to_backend<cuda>(hx.view());
  const auto launch = [&] { cuda::softmax_rows(x.view()); };
  launch();
  const double error = sampled_error(to_host<cuda>(x.view()), [&](Index r, Index c) {
    double sum = 0.0;
    for (Index j = 0; j < cols; ++j) sum += std::exp(double(hx(r, j)));
    return std::exp(double(hx(r, c))) / sum;
  });
  if (!(error <= 1e-5)) {  // expf within 2 ulp, 197-term sums
    state.SkipWithError(("validation failed: relative error " + std::to_string(error)).c_str());
    return;
  }
  // Repeated launches re-normalise rows that already sum to one: same traffic.
  report_bandwidth(state, 2.0 * double(rows * cols) * sizeof(float), time_launches(state, launch), error);
}

}  // namespace
}  // namespace plora

int main(int argc, char** argv) {
  using plora::cuda;
  using plora::Index;
  struct Shape {
    Index m, n, k;
  };
  // Attention projections (q, k, v, output), MLP up, MLP down.
  for (const Shape shape : {Shape{1576, 768, 768}, Shape{1576, 3072, 768}, Shape{1576, 768, 3072}})
    for (const auto& [mode, mode_name] : {std::pair{cuda::MathMode::Fp32, "fp32"}, std::pair{cuda::MathMode::Tf32, "tf32"},
                                          std::pair{cuda::MathMode::Bf16, "bf16"}}) {
      const std::string name = "gemm/" + std::to_string(shape.m) + "x" + std::to_string(shape.n) + "x" +
                               std::to_string(shape.k) + "/" + mode_name;
      benchmark::RegisterBenchmark(name.c_str(),
                                   [shape, mode = mode](benchmark::State& state) {
                                     plora::bm_gemm(state, shape.m, shape.n, shape.k, mode);
                                   })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond)
          ->MinTime(0.2);
    }
  benchmark::RegisterBenchmark("layernorm_forward/1576x768", plora::bm_layernorm_forward)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond)
      ->MinTime(0.2);
  benchmark::RegisterBenchmark("softmax_rows/18912x197", plora::bm_softmax_rows)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond)
      ->MinTime(0.2);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
