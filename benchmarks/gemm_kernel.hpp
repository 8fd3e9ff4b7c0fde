#pragma once
// Which GEMM kernel a CPU benchmark process runs: Eigen's own, MKL
// (PLORA_USE_MKL) with its version, or OpenBLAS (PLORA_USE_OPENBLAS) with the
// core it picked. OpenBLAS 0.3.21 does not
// recognise every CPU and silently falls back to a slow generic core, so
// every benchmark prints this and stores it in its results. Also the measured
// SGEMM peak the CPU models' achieved rate is compared with.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "models/bench_support.hpp"
#include "plora/backend/cpu/cpu.hpp"

#if defined(PLORA_USE_MKL)
#include <mkl_service.h>
#elif defined(PLORA_USE_CBLAS)
extern "C" char* openblas_get_corename();
extern "C" char* openblas_get_config();
extern "C" int openblas_get_num_threads();
#endif

namespace plora::bench {

inline std::string environment_value(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "(unset)";
}

inline std::string gemm_kernel_description() {
#if defined(PLORA_USE_MKL)
  char version[256] = {};
  mkl_get_version_string(version, sizeof version);
  return std::string("MKL cblas_sgemm (sequential): ") + version +
         ", MKL_ENABLE_INSTRUCTIONS=" + environment_value("MKL_ENABLE_INSTRUCTIONS");
#elif defined(PLORA_USE_CBLAS)
  return std::string("OpenBLAS cblas_sgemm: core ") + openblas_get_corename() + ", config '" + openblas_get_config() +
         "', threads " + std::to_string(openblas_get_num_threads()) +
         ", OPENBLAS_CORETYPE=" + environment_value("OPENBLAS_CORETYPE");
#else
  return "Eigen " + std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
         std::to_string(EIGEN_MINOR_VERSION) + " own kernel, OMP_NUM_THREADS=" + environment_value("OMP_NUM_THREADS");
#endif
}

/// The machine's practical SGEMM rate in GFLOP/s: the best median of five
/// plora::cpu::gemm calls over the ViT-B/16 shapes (1576 x 768 x 768,
/// 1576 x 3072 x 768, 1576 x 768 x 3072), measured once per process, or the
/// value of PLORA_SGEMM_PEAK_GFLOPS when set (to share one bench_gemm figure).
inline double sgemm_peak_gflops() {
  static const double peak = [] {
    if (const char* given = std::getenv("PLORA_SGEMM_PEAK_GFLOPS")) return std::atof(given);
    double best = 0.0;
    const Index shapes[3][3] = {{1576, 768, 768}, {1576, 3072, 768}, {1576, 768, 3072}};
    for (const auto& s : shapes) {
      HostMatrix a(s[0], s[2]), b(s[1], s[2]), c(s[0], s[1]);
      std::fill(a.values().begin(), a.values().end(), 0.5f);
      std::fill(b.values().begin(), b.values().end(), 0.25f);
      std::vector<double> seconds;
      for (int i = 0; i < 6; ++i) {
        const auto start = std::chrono::steady_clock::now();
        cpu::gemm(c.view(), a.view(), Op::N, b.view(), Op::T, 1.0f, 0.0f);
        if (i > 0) seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      }
      best = std::max(best, 2.0 * static_cast<double>(s[0] * s[1] * s[2]) / median(seconds) / 1e9);
    }
    return best;
  }();
  return peak;
}

/// main() of a Google Benchmark binary that prints the GEMM kernel and stores
/// it in the JSON context as "gemm_kernel".
inline int run_benchmarks(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  const std::string kernel = gemm_kernel_description();
  std::printf("GEMM kernel: %s\n", kernel.c_str());
  benchmark::AddCustomContext("gemm_kernel", kernel);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace plora::bench
