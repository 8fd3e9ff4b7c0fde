#pragma once
// Score-driven row/column masks (METHOD.md §3 ablations): keep the same number
// of rows and columns as the random mask would keep on average, k = round(P n)
// (at least 1), chosen either as the top-k scores (Targeted) or by sampling
// without replacement with probability proportional to the scores
// (StochasticTargeted). A side kept in full (k = n) needs no scores.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

#include "plora/core/rng.hpp"
#include "plora/masks/concepts.hpp"
#include "plora/masks/split.hpp"

namespace plora {

namespace detail {
/// round(p * n), at least 1 and at most n.
inline Index keep_count(double p, Index n) {
  return std::clamp<Index>(static_cast<Index>(std::llround(p * static_cast<double>(n))), 1, n);
}

/// The k indices with the largest keys (ties: the lower index), sorted.
inline std::vector<std::int32_t> top_k(const std::vector<double>& keys, Index k) {
  std::vector<std::int32_t> order(keys.size());
  std::iota(order.begin(), order.end(), 0);
  const auto before = [&](std::int32_t a, std::int32_t b) {
    const auto ka = keys[static_cast<std::size_t>(a)], kb = keys[static_cast<std::size_t>(b)];
    return ka > kb || (ka == kb && a < b);
  };
  std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
  order.resize(static_cast<std::size_t>(k));
  std::sort(order.begin(), order.end());
  return order;
}

/// The scores of one side, checked to be present (when needed) and valid.
inline void check_scores(std::span<const float> scores, std::string_view site, const char* side) {
  check<ValueError>(!scores.empty(), site_label(site), ": ", side, " scores are required to choose a subset of the ",
                    side, "s");
  for (std::size_t i = 0; i < scores.size(); ++i)
    check<ValueError>(std::isfinite(scores[i]), site_label(site), ": ", side, " score ", i, " is ", scores[i]);
}

/// Chooses k = keep_count(p, n) indices of one side by `keys(scores, first)`.
template <class Keys>
std::vector<std::int32_t> choose_side(Index n, double p, std::span<const float> scores, std::string_view site,
                                      const char* side, Keys&& keys) {
  const Index k = keep_count(p, n);
  if (k == n) {
    std::vector<std::int32_t> all(static_cast<std::size_t>(n));
    std::iota(all.begin(), all.end(), 0);
    return all;
  }
  check_scores(scores, site, side);
  return top_k(keys(scores), k);
}

/// Applies `choose_side` to rows (draws [0, out)) and columns (draws [out, out + in)).
template <SplitPolicy Split, class Keys>
RowColMask choose_rows_cols(const MaskRequest& request, Keys&& keys) {
  validate(request);
  const auto [p_row, p_col] = Split::probabilities(request.ratio);
  const auto out = static_cast<std::uint64_t>(request.out);
  return {choose_side(request.out, p_row, request.row_scores, request.site, "row",
                      [&](std::span<const float> s) { return keys(s, 0); }),
          choose_side(request.in, p_col, request.col_scores, request.site, "column",
                      [&](std::span<const float> s) { return keys(s, out); })};
}
}  // namespace detail

/// Keeps the k top-scored rows and columns (ties: lower index first).
/// @tparam Split  a SplitPolicy giving the row and column fractions
template <SplitPolicy Split = BalancedSplit>
struct Targeted {
  [[nodiscard]] RowColMask sample(const MaskRequest& request) const {
    return detail::choose_rows_cols<Split>(request, [](std::span<const float> scores, std::uint64_t) {
      return std::vector<double>(scores.begin(), scores.end());
    });
  }
};

/// Samples k rows and k' columns without replacement, each draw picking among
/// the remaining ones with probability proportional to its (non-negative)
/// score, like torch.multinomial(scores, k, replacement=False). Implemented by
/// Efraimidis-Spirakis keys log(u) / score over the request's stream, so the
/// sample depends only on (seed, stream). Zero-score entries come last, in
/// random order: where fewer than k scores are positive (torch.multinomial
/// refuses that case) the rest of the k are drawn uniformly among them.
/// @tparam Split  a SplitPolicy giving the row and column fractions
template <SplitPolicy Split = BalancedSplit>
struct StochasticTargeted {
  [[nodiscard]] RowColMask sample(const MaskRequest& request) const {
    return detail::choose_rows_cols<Split>(request, [&](std::span<const float> scores, std::uint64_t first) {
      std::vector<double> keys(scores.size());
      for (std::size_t i = 0; i < scores.size(); ++i) {
        check<ValueError>(scores[i] >= 0.0f, detail::site_label(request.site), ": score ", i, " is negative (",
                          scores[i], "); sampling proportional to scores needs non-negative scores");
        // 1 - u lies in (0, 1], so the log is finite.
        const double u = 1.0 - RandomStream::uniform_at(request.seed, request.stream, first + i);
        // Zero scores: keys in [lowest, lowest / 2], below every positive score's key (>= -1e48: |log u| < 40
        // and a positive float score is > 1e-46), in an order as random as u.
        keys[i] = scores[i] > 0.0f ? std::log(u) / scores[i] : std::numeric_limits<double>::lowest() * (0.5 + 0.5 * u);
      }
      return keys;
    });
  }
};

using TargetedMask = Targeted<BalancedSplit>;
using StochasticTargetedMask = StochasticTargeted<BalancedSplit>;

static_assert(Mask<TargetedMask>);
static_assert(Mask<StochasticTargetedMask>);

}  // namespace plora
