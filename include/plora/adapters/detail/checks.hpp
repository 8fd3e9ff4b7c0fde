#pragma once
// Argument checks shared by the adapters: hyper-parameter ranges, kept index
// lists and activation shapes. Each throws a plora error naming the adapter,
// the offending value and what is allowed.
#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

#include "plora/core/error.hpp"
#include "plora/core/view.hpp"

namespace plora::detail {

inline void check_layer_shape(std::string_view adapter, Index out, Index in) {
  check<ShapeError>(out >= 1 && in >= 1, adapter, ": the linear weight must be at least 1 x 1, got ", out, " x ",
                    in);
}

inline void check_rank(std::string_view adapter, std::string_view field, Index rank, Index out, Index in) {
  const Index max_rank = std::min(out, in);
  check<ValueError>(rank >= 1 && rank <= max_rank, adapter, ": ", field, " = ", rank,
                    " is outside [1, min(out, in)] = [1, ", max_rank, "] for a ", out, " x ", in, " weight");
}

/// NaN fails both comparisons and is rejected too.
inline void check_dropout(std::string_view adapter, float p) {
  check<ValueError>(p >= 0.0f && p < 1.0f, adapter, ": dropout = ", p, " is outside [0, 1)");
}

/// A kept index list must be non-empty, strictly increasing and inside [0, bound).
inline void check_kept(std::string_view adapter, std::string_view what, const std::vector<std::int32_t>& ids,
                       Index bound) {
  check<ValueError>(!ids.empty(), adapter, ": ", what, " is empty; keep at least one index");
  for (std::size_t i = 0; i < ids.size(); ++i) {
    check<ShapeError>(ids[i] >= 0 && ids[i] < bound, adapter, ": ", what, "[", i, "] = ", ids[i],
                      " is outside [0, ", bound, ")");
    check<ValueError>(i == 0 || ids[i - 1] < ids[i], adapter, ": ", what,
                      " must be sorted ascending without duplicates, but ", what, "[", i - 1, "] = ", ids[i - 1],
                      " is followed by ", ids[i]);
  }
}

/// forward(y, x): x is (tokens, in), y is (tokens, out).
template <class YView, class XView>
void check_forward(std::string_view adapter, const YView& y, const XView& x, Index out, Index in) {
  check<ShapeError>(x.cols == in, adapter, " forward: x has ", x.cols, " columns, expected in_features = ", in);
  check<ShapeError>(y.rows == x.rows && y.cols == out, adapter, " forward: y is ", y.rows, " x ", y.cols,
                    ", expected ", x.rows, " x ", out, " (tokens x out_features)");
}

/// backward(dx, dy, x): dy is (tokens, out), x and a non-empty dx are (tokens, in).
template <class DxView, class DyView, class XView>
void check_backward(std::string_view adapter, const DxView& dx, const DyView& dy, const XView& x, Index out,
                    Index in) {
  check<ShapeError>(x.cols == in, adapter, " backward: x has ", x.cols, " columns, expected in_features = ", in);
  check<ShapeError>(dy.rows == x.rows && dy.cols == out, adapter, " backward: dy is ", dy.rows, " x ", dy.cols,
                    ", expected ", x.rows, " x ", out, " (tokens x out_features)");
  check<ShapeError>(dx.empty() || (dx.rows == x.rows && dx.cols == in), adapter, " backward: dx is ", dx.rows,
                    " x ", dx.cols, ", expected ", x.rows, " x ", in, " (or empty to skip it)");
}

/// Saved state must come from a forward over the same number of tokens.
inline void check_saved_tokens(std::string_view adapter, Index saved_tokens, Index tokens) {
  check<ShapeError>(saved_tokens == tokens, adapter, " backward: the saved state is from a forward over ",
                    saved_tokens, " tokens but x has ", tokens, " rows (pass the Saved of this application)");
}

}  // namespace plora::detail
