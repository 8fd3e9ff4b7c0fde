#pragma once
// Learning-rate schedules as multipliers of the base rate, a function of the
// number of optimizer steps already taken (the LambdaLR convention of
// transformers' get_*_schedule_with_warmup: step 0 is the first update).
#include <algorithm>
#include <cmath>
#include <concepts>
#include <numbers>

#include "plora/core/error.hpp"
#include "plora/core/view.hpp"

namespace plora {

template <class S>
concept LrSchedule = std::copy_constructible<S> && requires(const S& s, Index step) {
  { s(step) } -> std::convertible_to<double>;
};

/// The base rate at every step.
struct ConstantSchedule {
  [[nodiscard]] double operator()(Index) const { return 1.0; }
};

namespace detail {
inline void check_warmup(Index warmup_steps, Index total_steps, const char* schedule) {
  check<ValueError>(warmup_steps >= 0 && total_steps >= 0, schedule, ": warmup ", warmup_steps, " and total ",
                    total_steps, " steps must be non-negative");
}
/// step / warmup during warm-up.
inline double warmup_factor(Index step, Index warmup_steps) {
  return static_cast<double>(step) / static_cast<double>(std::max<Index>(1, warmup_steps));
}
/// `steps` over the decay's length (at least 1, as transformers divides).
inline double over_decay(Index steps, Index warmup_steps, Index total_steps) {
  return static_cast<double>(steps) / static_cast<double>(std::max<Index>(1, total_steps - warmup_steps));
}
}  // namespace detail

/// Linear warm-up from 0 to 1 over `warmup_steps`, then linear decay to 0 at
/// `total_steps` (get_linear_schedule_with_warmup).
struct LinearWarmupDecay {
  Index warmup_steps = 0;
  Index total_steps = 0;

  LinearWarmupDecay(Index warmup, Index total) : warmup_steps(warmup), total_steps(total) {
    detail::check_warmup(warmup, total, "LinearWarmupDecay");
  }
  [[nodiscard]] double operator()(Index step) const {
    if (step < warmup_steps) return detail::warmup_factor(step, warmup_steps);
    // Steps left over the decay's length: 0 from total_steps on, also when warm-up reaches it.
    return std::max(0.0, detail::over_decay(total_steps - step, warmup_steps, total_steps));
  }
};

/// Linear warm-up, then a cosine from 1 down to 0 over `num_cycles` periods
/// (0.5: half a period, ending at 0 at `total_steps`) — get_cosine_schedule_with_warmup.
struct CosineWarmupDecay {
  Index warmup_steps = 0;
  Index total_steps = 0;
  double num_cycles = 0.5;

  CosineWarmupDecay(Index warmup, Index total, double cycles = 0.5)
      : warmup_steps(warmup), total_steps(total), num_cycles(cycles) {
    detail::check_warmup(warmup, total, "CosineWarmupDecay");
    // An infinite count makes every factor NaN (inf * 0 at the first decay step).
    check<ValueError>(std::isfinite(cycles) && cycles > 0.0, "CosineWarmupDecay: num_cycles ", cycles,
                      " must be finite and positive");
  }
  [[nodiscard]] double operator()(Index step) const {
    if (step < warmup_steps) return detail::warmup_factor(step, warmup_steps);
    const double progress = detail::over_decay(step - warmup_steps, warmup_steps, total_steps);
    return std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * num_cycles * 2.0 * progress)));
  }
};

static_assert(LrSchedule<ConstantSchedule> && LrSchedule<LinearWarmupDecay> && LrSchedule<CosineWarmupDecay>);

}  // namespace plora
