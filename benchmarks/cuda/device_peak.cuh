#pragma once
// What every GPU benchmark asks of the device: that there is one (else the
// benchmark reports why not), and its theoretical peaks, which the achieved
// rates are reported against (fraction_of_peak, MFU).
#include <benchmark/benchmark.h>

#include "plora/backend/cuda/cuda.cuh"

namespace plora::bench {

/// Whether a CUDA device can be used; if not, the benchmark is skipped with the reason.
inline bool require_device(benchmark::State& state) {
  if (cuda::available()) return true;
  state.SkipWithError(("no CUDA device: " + cuda::unavailable_reason()).c_str());
  return false;
}

inline int device_attribute(cudaDeviceAttr attribute) {
  int device = 0, value = 0;
  PLORA_CUDA_CHECK(cudaGetDevice(&device));
  PLORA_CUDA_CHECK(cudaDeviceGetAttribute(&value, attribute, device));
  return value;
}

/// Dense peak in TFLOP/s at the reported maximum clock: SMs x clock x FLOP per
/// SM per clock, which on sm_90 (Hopper) is 256 for fp32 FMA on CUDA cores and
/// 2048 / 4096 for TF32 / BF16 on tensor cores. 0 on other architectures.
inline double peak_tflops(cuda::MathMode mode) {
  if (device_attribute(cudaDevAttrComputeCapabilityMajor) != 9) return 0.0;
  const double per_sm_clock = mode == cuda::MathMode::Fp32 ? 256.0 : mode == cuda::MathMode::Tf32 ? 2048.0 : 4096.0;
  return device_attribute(cudaDevAttrMultiProcessorCount) * device_attribute(cudaDevAttrClockRate) * 1e3 *
         per_sm_clock / 1e12;
}

/// Peak memory bandwidth in GB/s: double data rate x memory clock x bus width.
inline double peak_gbps() {
  return 2.0 * device_attribute(cudaDevAttrMemoryClockRate) * 1e3 *
         (device_attribute(cudaDevAttrGlobalMemoryBusWidth) / 8.0) / 1e9;
}

}  // namespace plora::bench
