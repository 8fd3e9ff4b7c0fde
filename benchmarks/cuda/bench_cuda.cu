// GPU microbenchmarks of plora::cuda. GEMM throughput at the ViT-Base linear
// shapes (8 images x 197 tokens = 1576 rows; c = x W^T as in LinearSite) in
// fp32, TF32 and BF16 against the device's theoretical peak; the bandwidth of
// two row kernels against the memory's; adapter forward + backward on one
// linear site, dense LoRA against Partial-LoRA at ΔW densities 1, 0.5, 0.25,
// 0.13 (balanced sqrt split), r = 8, shapes 768x768 and 3072x768, for 8 and 64
// images of 197 tokens. Every benchmark first validates its result, then
// times batches of launches with CUDA events. Whole-model training steps are
// in bench_cuda_models.
//   bench_cuda --benchmark_format=json --benchmark_out=<file>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "adapters/adapter_work.hpp"
#include "device_peak.cuh"
#include "plora/adapters/lora.hpp"
#include "plora/adapters/partial.hpp"
#include "plora/backend/cuda/cuda.cuh"
#include "plora/core/rng.hpp"
#include "plora/masks/bernoulli.hpp"

namespace plora {
namespace {
using bench::peak_gbps;
using bench::peak_tflops;
using bench::require_device;

constexpr int kLaunchesPerIteration = 20;  // amortises the gaps between launches and events
// Device seconds of launches each benchmark runs for. An iteration's manual
// time is one launch's, so an iteration takes kLaunchesPerIteration times that
// in wall time: at 0.2 s the 31 benchmarks ran past three minutes on an H200.
constexpr double kMinLaunchSeconds = 0.02;
constexpr int kValidationSamples = 64;

HostMatrix random_host(Index rows, Index cols, std::uint64_t seed) {
  HostMatrix m(rows, cols);
  RandomStream rng(seed, 0);
  for (auto& v : m.values()) v = rng.uniform(-1.0f, 1.0f);
  return m;
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
  const cuda::MathModeScope scope(mode);
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
    state.SkipWithError(("validation failed: relative error " + std::to_string(error)).c_str());
    return;
  }
  const double seconds = time_launches(state, launch);
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

constexpr Index kAdapterRank = 8;

/// Times forward + backward of `adapter` on (tokens x in) -> (tokens x out)
/// after checking that, with B = 0 as initialised, it leaves y at zero.
template <class AdapterT>
void time_adapter(benchmark::State& state, AdapterT& adapter, Index tokens, Index out, Index in, double flops) {
  const DeviceMatrix x = to_backend<cuda>(random_host(tokens, in, 1).view());
  const DeviceMatrix dy = to_backend<cuda>(random_host(tokens, out, 2).view());
  DeviceMatrix y = to_backend<cuda>(HostMatrix(tokens, out).view()), dx(tokens, in);
  typename AdapterT::Saved saved;
  adapter.forward(y.view(), x.view(), saved);
  if (cuda::sum_squares(y.view()) != 0.0) {
    state.SkipWithError("validation failed: an adapter with B = 0 changed y");
    return;
  }
  const double seconds = time_launches(state, [&] {
    adapter.forward(y.view(), x.view(), saved);
    adapter.backward(dx.view(), dy.view(), x.view(), saved);
  });
  state.counters["TFLOPS"] = flops / seconds / 1e12;
}

void bm_dense_lora(benchmark::State& state, Index tokens, Index out, Index in) {
  if (!require_device(state)) return;
  Lora<cuda> lora(out, in, LoraConfig{.rank = kAdapterRank, .alpha = 16}, RandomStream(0, 1));
  time_adapter(state, lora, tokens, out, in, bench::adapter_flops(tokens, kAdapterRank, out, in));
  state.counters["density"] = 1.0;
}

void bm_partial_lora(benchmark::State& state, Index tokens, Index out, Index in, double density) {
  if (!require_device(state)) return;
  const RowColMask mask = PartialMask{}.sample({.out = out, .in = in, .ratio = density, .seed = 7, .stream = 1});
  PartialLora<cuda> partial(
      out, in, {.inner = {.rank = kAdapterRank, .alpha = 16}, .kept_rows = mask.rows, .kept_cols = mask.cols},
      RandomStream(0, 1));
  const auto rows = static_cast<Index>(mask.rows.size()), cols = static_cast<Index>(mask.cols.size());
  time_adapter(state, partial, tokens, out, in, bench::adapter_flops(tokens, kAdapterRank, rows, cols));
  state.counters["density"] = static_cast<double>(rows * cols) / static_cast<double>(out * in);
}

/// Registers a benchmark that times with time_launches: manual time per
/// launch, in microseconds, for kMinLaunchSeconds of launches.
template <class Body>
void register_launches(const std::string& name, Body body) {
  benchmark::RegisterBenchmark(name.c_str(), std::move(body))
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond)
      ->MinTime(kMinLaunchSeconds);
}

}  // namespace
}  // namespace plora

int main(int argc, char** argv) {
  using plora::cuda;
  using plora::Index;
  using plora::register_launches;
  struct Shape {
    Index m, n, k;
  };
  // Attention projections (q, k, v, output), MLP up, MLP down.
  for (const Shape shape : {Shape{1576, 768, 768}, Shape{1576, 3072, 768}, Shape{1576, 768, 3072}})
    for (const auto& [mode, mode_name] : {std::pair{cuda::MathMode::Fp32, "fp32"}, std::pair{cuda::MathMode::Tf32, "tf32"},
                                          std::pair{cuda::MathMode::Bf16, "bf16"}})
      register_launches("gemm/" + std::to_string(shape.m) + "x" + std::to_string(shape.n) + "x" +
                            std::to_string(shape.k) + "/" + mode_name,
                        [shape, mode = mode](benchmark::State& state) {
                          plora::bm_gemm(state, shape.m, shape.n, shape.k, mode);
                        });
  register_launches("layernorm_forward/1576x768", plora::bm_layernorm_forward);
  register_launches("softmax_rows/18912x197", plora::bm_softmax_rows);
  for (const Index images : {8, 64})
    for (const auto& [out, in] : {std::pair<Index, Index>{768, 768}, std::pair<Index, Index>{3072, 768}}) {
      const Index tokens = images * 197;
      const std::string shape = std::to_string(out) + "x" + std::to_string(in) + "/tokens:" + std::to_string(tokens);
      register_launches("adapter/dense_lora/" + shape,
                        [=](benchmark::State& state) { plora::bm_dense_lora(state, tokens, out, in); });
      for (const int percent : {100, 50, 25, 13})
        register_launches("adapter/partial_lora/" + shape + "/density%:" + std::to_string(percent),
                          [=](benchmark::State& state) {
                            plora::bm_partial_lora(state, tokens, out, in, percent / 100.0);
                          });
    }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
