#pragma once
// Random row/column masks: every row and every column is kept independently
// with its split probability (the Partial-LoRA mask, METHOD.md §1, §3).
#include <cstdint>
#include <vector>

#include "plora/core/rng.hpp"
#include "plora/masks/concepts.hpp"
#include "plora/masks/split.hpp"

namespace plora {

namespace detail {
/// Indices i in [0, n) with u(first + i) < p, u the uniform draws of (seed,
/// stream); if none passes, the index with the smallest draw, so a kept set is
/// never empty.
inline std::vector<std::int32_t> bernoulli_keep(Index n, double p, std::uint64_t seed, std::uint64_t stream,
                                                std::uint64_t first) {
  std::vector<std::int32_t> kept;
  std::int32_t smallest = 0;
  float smallest_draw = 2.0f;
  for (Index i = 0; i < n; ++i) {
    const float u = RandomStream::uniform_at(seed, stream, first + static_cast<std::uint64_t>(i));
    if (static_cast<double>(u) < p) kept.push_back(static_cast<std::int32_t>(i));
    if (u < smallest_draw) {
      smallest_draw = u;
      smallest = static_cast<std::int32_t>(i);
    }
  }
  if (kept.empty()) kept.push_back(smallest);
  return kept;
}
}  // namespace detail

/// I.i.d. Bernoulli row and column masks. Row i uses draw i and column j draw
/// out + j of stream (seed, stream), so a mask depends only on the request,
/// never on thread count or backend. Scores are ignored.
/// @tparam Split  a SplitPolicy (BalancedSplit, RowsOnly, ColsOnly)
template <SplitPolicy Split = BalancedSplit>
struct Bernoulli {
  [[nodiscard]] RowColMask sample(const MaskRequest& request) const {
    validate(request);
    const auto [p_row, p_col] = Split::probabilities(request.ratio);
    return {detail::bernoulli_keep(request.out, p_row, request.seed, request.stream, 0),
            detail::bernoulli_keep(request.in, p_col, request.seed, request.stream,
                                   static_cast<std::uint64_t>(request.out))};
  }
};

/// The Partial-LoRA mask: random rows and columns, balanced split.
using PartialMask = Bernoulli<BalancedSplit>;

static_assert(Mask<PartialMask>);

}  // namespace plora
