#pragma once
// Split policies: how a layer's sparsity ratio p becomes the keep probabilities
// of rows and columns, P(row) * P(col) = p (METHOD.md §1).
#include <cmath>
#include <utility>

namespace plora {

/// P(row) = P(col) = sqrt(p): the default (our choice, METHOD.md §1).
struct BalancedSplit {
  static std::pair<double, double> probabilities(double ratio) {
    const double side = std::sqrt(ratio);
    return {side, side};
  }
};

/// Only rows are masked: P(row) = p, every column kept.
struct RowsOnly {
  static std::pair<double, double> probabilities(double ratio) { return {ratio, 1.0}; }
};

/// Only columns are masked: P(col) = p, every row kept.
struct ColsOnly {
  static std::pair<double, double> probabilities(double ratio) { return {1.0, ratio}; }
};

}  // namespace plora
