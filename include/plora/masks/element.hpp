#pragma once
// Element masks for Random Masking (Xu & Zhang 2024): a fixed random subset of
// the entries of W is trainable.
#include <cstdint>
#include <vector>

#include "plora/masks/bernoulli.hpp"
#include "plora/masks/concepts.hpp"

namespace plora {

/// Keeps each entry of a (rows x cols) weight independently with probability
/// `density`; entry (r, c) has flat index r * cols + c and uses that draw of
/// stream (seed, stream). Returns the sorted kept flat indices, never empty.
struct BernoulliElements {
  [[nodiscard]] std::vector<std::int32_t> sample(const ElementMaskRequest& request) const {
    validate(request);
    return detail::bernoulli_keep(request.rows * request.cols, request.density, request.seed, request.stream, 0);
  }
};

static_assert(ElementMask<BernoulliElements>);

}  // namespace plora
