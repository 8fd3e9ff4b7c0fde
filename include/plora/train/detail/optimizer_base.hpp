#pragma once
// What every optimizer keeps besides its config: the step count, the learning
// rate scale a schedule sets, and the per-parameter buffers, with the
// checkpoint export / import of all three (shared by AdamW and SGD).
#include <array>
#include <cmath>
#include <cstddef>
#include <string>
#include <string_view>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/core/parameter.hpp"
#include "plora/train/detail/named_buffers.hpp"
#include "plora/train/optimizer_concepts.hpp"

namespace plora::detail {

/// Throws a ValueError naming `optimizer` and `field` unless `value` is finite and >= 0
/// (`value >= 0` alone lets +inf through, and an infinite rate or decay turns parameters into NaN).
inline void check_non_negative(std::string_view optimizer, std::string_view field, double value) {
  check<ValueError>(std::isfinite(value) && value >= 0.0, optimizer, ": ", field, " = ", value,
                    " must be finite and >= 0");
}

/// Base of an optimizer with N buffers per parameter.
template <Backend B, std::size_t N>
class OptimizerBase {
 public:
  void zero_state() {
    buffers_.clear();
    step_ = 0;
  }
  [[nodiscard]] OptimizerState export_state() const {
    OptimizerState state{.optimizer = buffers_.optimizer(), .step = step_, .tensors = {}};
    buffers_.export_to(state);
    return state;
  }
  /// Replaces the state by `state`, kept for `params`: throws, changing
  /// nothing, unless it is this kind's, and holds, after a first step, every
  /// buffer of every parameter (none before one, or when it keeps none) at
  /// its parameter's shape, and nothing else.
  void import_state(const OptimizerState& state, const ParameterList<typename B::Space>& params) {
    const std::string& name = buffers_.optimizer();
    check<ValueError>(state.optimizer == name, name, ": the state to import was kept by ",
                      state.optimizer.empty() ? std::string("an unnamed optimizer") : "'" + state.optimizer + "'");
    check<ValueError>(state.step >= 0, name, ": negative step count ", state.step);
    buffers_.import_from(state, params, state.step > 0 && keeps_buffers_);
    step_ = state.step;
  }

  void set_lr_scale(double scale) {
    check_non_negative(buffers_.optimizer(), "learning rate scale", scale);
    lr_scale_ = scale;
  }
  [[nodiscard]] Index step_count() const { return step_; }

 protected:
  /// `keeps_buffers`: every step fills every parameter's buffers (false: none are kept).
  OptimizerBase(std::string_view optimizer, std::array<std::string_view, N> buffer_names, bool keeps_buffers = true)
      : buffers_(optimizer, buffer_names), keeps_buffers_(keeps_buffers) {}

  double lr_scale_ = 1.0;
  Index step_ = 0;  // one count for all parameters: they always step together
  NamedBuffers<B, N> buffers_;

 private:
  bool keeps_buffers_;
};

}  // namespace plora::detail
