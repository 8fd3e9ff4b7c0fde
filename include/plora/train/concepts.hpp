#pragma once
// Concepts of the training loop. BatchSource: a dataset seen as numbered
// batches whose order within an epoch is a pure function of (seed, epoch),
// so a resumed run sees exactly the batches an uninterrupted one would.
// CheckpointState: an object besides the model and the optimizer whose state
// a run depends on (AdaLoRA's rank allocator), saved in checkpoints as named
// host tensors.
#include <concepts>
#include <map>
#include <string>

#include "plora/core/host_matrix.hpp"
#include "plora/core/view.hpp"

namespace plora {

/// An object's checkpointed state: named host tensors.
using StateTensors = std::map<std::string, HostMatrix>;

/// export_state() gives the state; check_state(t) throws unless import_state(t)
/// would succeed, so a checkpoint can be checked whole before anything changes.
template <class S>
concept CheckpointState = requires(S& s, const S& cs, const StateTensors& tensors) {
  { cs.export_state() } -> std::same_as<StateTensors>;
  cs.check_state(tensors);
  s.import_state(tensors);
};

template <class S>
concept BatchSource = requires(const S& s, Index epoch, Index i) {
  typename S::Batch;
  { s.batches_per_epoch() } -> std::convertible_to<Index>;
  { s.batch(epoch, i) } -> std::same_as<typename S::Batch>;
};

}  // namespace plora
