#pragma once
// What every optimizer keeps besides its config: the step count, the learning
// rate scale a schedule sets, and the per-parameter buffers, with the
// checkpoint export / import of all three (shared by AdamW and SGD).
#include <array>
#include <cstddef>
#include <string_view>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/train/detail/named_buffers.hpp"
#include "plora/train/optimizer_concepts.hpp"

namespace plora::detail {

/// Base of an optimizer with N buffers per parameter.
template <Backend B, std::size_t N>
class OptimizerBase {
 public:
  void zero_state() {
    buffers_.clear();
    step_ = 0;
  }
  [[nodiscard]] OptimizerState export_state() const {
    OptimizerState state{.step = step_, .tensors = {}};
    buffers_.export_to(state);
    return state;
  }
  void import_state(const OptimizerState& state) {
    check<ValueError>(state.step >= 0, buffers_.optimizer(), ": negative step count ", state.step);
    buffers_.import_from(state);
    step_ = state.step;
  }

  void set_lr_scale(double scale) { lr_scale_ = scale; }
  [[nodiscard]] Index step_count() const { return step_; }

 protected:
  OptimizerBase(std::string_view optimizer, std::array<std::string_view, N> buffer_names)
      : buffers_(optimizer, buffer_names) {}

  double lr_scale_ = 1.0;
  Index step_ = 0;  // one count for all parameters: they always step together
  NamedBuffers<B, N> buffers_;
};

}  // namespace plora::detail
