#pragma once
// The Optimizer concept: updates a ParameterList from its gradients, keeps
// per-parameter state keyed by parameter name, and exports / imports that
// state as named host tensors plus a step count (for checkpoints).
//
//   step(params)          one update of every parameter from its gradient
//   zero_state()          forget all state (moments, momentum, step count)
//   export_state()        OptimizerState: its kind, tensors "<param name>.<buffer>", step
//   import_state(state, params)
//                         the reverse, for `params`: checks the kind and that the
//                         buffers are exactly those of `params` before changing anything
//   set_lr_scale(s)       the learning rate of the next steps is s * base lr
//   lr()                  the current learning rate
//   step_count()          steps taken
#include <concepts>
#include <map>
#include <string>
#include <utility>

#include "plora/backend/concepts.hpp"
#include "plora/core/host_matrix.hpp"
#include "plora/core/parameter.hpp"

namespace plora {

/// An optimizer's state in host memory.
struct OptimizerState {
  std::string optimizer;  ///< the kind that kept it ("AdamW", "Sgd")
  Index step = 0;
  std::map<std::string, HostMatrix> tensors;  ///< "<param name>.<buffer>" -> buffer
};

template <class O>
concept Optimizer = Backend<typename O::BackendType> &&
    requires(O& o, const O& co, ParameterList<typename O::BackendType::Space>& params, const OptimizerState& state,
             double scale) {
  o.step(params);
  o.zero_state();
  { co.export_state() } -> std::same_as<OptimizerState>;
  o.import_state(state, std::as_const(params));
  o.set_lr_scale(scale);
  { co.lr() } -> std::convertible_to<double>;
  { co.step_count() } -> std::convertible_to<Index>;
};

}  // namespace plora
