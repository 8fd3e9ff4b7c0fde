#pragma once
// The GEMM work of one low-rank adapter pass, shared by the CPU and GPU
// adapter benchmarks.
#include "plora/core/view.hpp"

namespace plora::bench {

/// GEMM FLOPs of forward + backward for a rank-r adapter of kept (rows x cols)
/// over `tokens` rows: forward 2T·r·(cols + rows); backward dB 2T·r·rows,
/// d(down) 2T·r·rows, dA 2T·r·cols, dx 2T·r·cols.
inline double adapter_flops(Index tokens, Index rank, Index rows, Index cols) {
  const double t = static_cast<double>(tokens), r = static_cast<double>(rank);
  return 2.0 * t * r * (2.0 * static_cast<double>(rows) + 2.0 * static_cast<double>(cols)) +
         2.0 * t * r * static_cast<double>(rows + cols);
}

}  // namespace plora::bench
