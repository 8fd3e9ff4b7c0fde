#pragma once
// Concepts of the training loop. BatchSource: a dataset seen as numbered
// batches whose order within an epoch is a pure function of (seed, epoch),
// so a resumed run sees exactly the batches an uninterrupted one would.
#include <concepts>

#include "plora/core/view.hpp"

namespace plora {

template <class S>
concept BatchSource = requires(const S& s, Index epoch, Index i) {
  typename S::Batch;
  { s.batches_per_epoch() } -> std::convertible_to<Index>;
  { s.batch(epoch, i) } -> std::same_as<typename S::Batch>;
};

}  // namespace plora
