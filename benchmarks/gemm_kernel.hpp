#pragma once
// Which GEMM kernel a benchmark process runs: Eigen's own, or OpenBLAS
// (PLORA_USE_OPENBLAS) with the core it picked. OpenBLAS 0.3.21 does not
// recognise every CPU and silently falls back to a slow generic core, so
// every benchmark prints this and stores it in its results.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <Eigen/Core>

#ifdef PLORA_USE_CBLAS
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
#ifdef PLORA_USE_CBLAS
  return std::string("OpenBLAS cblas_sgemm: core ") + openblas_get_corename() + ", config '" + openblas_get_config() +
         "', threads " + std::to_string(openblas_get_num_threads()) +
         ", OPENBLAS_CORETYPE=" + environment_value("OPENBLAS_CORETYPE");
#else
  return "Eigen " + std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
         std::to_string(EIGEN_MINOR_VERSION) + " own kernel, OMP_NUM_THREADS=" + environment_value("OMP_NUM_THREADS");
#endif
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
