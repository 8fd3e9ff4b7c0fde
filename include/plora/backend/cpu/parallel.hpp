#pragma once
// The host's threading: loops over independent iterations split over the
// threads the backend may use (cpu::set_threads), one OpenMP team for
// GEMMs and row-wise kernels alike.
#include <Eigen/Core>

#include "plora/core/host_matrix.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace plora::detail::cpu {

/// Below this many elements a row-wise kernel runs on one thread: waking the
/// OpenMP team costs more than a small matrix's loop.
constexpr Index kParallelElements = Index{1} << 15;

/// body(i) for i in [0, count), split over the threads GEMMs may use (one
/// thread when nested in a parallel region); iterations must be independent.
template <class F>
void parallel_for(Index count, F&& body) {
#ifdef _OPENMP
  const int threads = Eigen::nbThreads();
  if (threads > 1 && count > 1 && !omp_in_parallel()) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (Index i = 0; i < count; ++i) body(i);
    return;
  }
#endif
  for (Index i = 0; i < count; ++i) body(i);
}

/// body(r) for every row r of a (rows x cols) matrix: threaded only when the
/// matrix is large enough to pay for waking the team.
template <class F>
void parallel_rows(Index rows, Index cols, F&& body) {
  if (rows * cols >= kParallelElements) {
    parallel_for(rows, body);
  } else {
    for (Index r = 0; r < rows; ++r) body(r);
  }
}

}  // namespace plora::detail::cpu
