#pragma once
// Trainer callbacks, ensmallen style: a callback is any object with some of the
// hooks below (detected at compile time, no virtual calls). Every hook returns
// bool — true asks the trainer to stop after the current hook — or void.
//
//   on_train_begin(ctx)             before the first step of fit()
//   on_epoch_begin(ctx)             before an epoch's first batch (not when resuming mid-epoch)
//   on_step_begin(ctx)              before a batch's forward pass
//   on_gradients(ctx)               after backward and the finite check, before clipping and
//                                   the optimizer step: may add regularisation gradients (and
//                                   their loss to ctx.loss), e.g. AdaLoRA's orthogonality term
//   on_step_end(ctx, loss, step)    after the optimizer step; the gradients of this step are
//                                   still in place (AdaLoRA's rank allocator runs here); `step`
//                                   counts steps taken so far
//   on_epoch_end(ctx)               after an epoch's last batch
//   on_evaluate(ctx, metrics)       after a hook reported metrics through ctx.report()
//   on_train_end(ctx)               when fit() ends, stopped or not
//
// Every callback sees every hook call, even after another asked to stop.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <functional>
#include <iomanip>
#include <limits>
#include <map>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "plora/core/error.hpp"
#include "plora/core/host_matrix.hpp"
#include "plora/core/view.hpp"
#include "plora/train/concepts.hpp"

namespace plora {

/// Named evaluation results, e.g. {"accuracy": 0.93, "loss": 0.21}.
using Metrics = std::map<std::string, double>;

/// What the trainer tells its callbacks; filled before every hook.
struct TrainContext {
  Index epoch = 0;           ///< current epoch, from 0
  Index epochs = 0;          ///< epochs of the run
  Index batch_in_epoch = 0;  ///< index of the current batch in its epoch
  Index batches_per_epoch = 0;
  Index step = 0;            ///< optimizer steps taken
  Index total_steps = 0;     ///< steps the run takes unless stopped early
  Index batch_examples = 0;  ///< examples in the current batch
  Index examples_seen = 0;   ///< examples trained on in this fit() call
  Index steps_this_run = 0;  ///< steps taken in this fit() call (differs from step after a resume)
  float loss = 0.0f;         ///< loss of the current step
  double lr = 0.0;           ///< learning rate of the current step
  double grad_norm = 0.0;    ///< pre-clipping gradient norm (0 when not clipping)
  /// On a step that closes a log window (TrainerConfig::log_every), its mean
  /// loss, the value the trainer's log records; empty on the other steps.
  std::optional<double> logged_loss;
  /// Metrics handed in by hooks; the trainer passes each to every callback's
  /// on_evaluate once the current hook has run, then clears the list.
  std::vector<Metrics> reported;

  void report(Metrics metrics) { reported.push_back(std::move(metrics)); }
};

/// A hook's result: bool (true = stop) or nothing.
template <class R>
concept HookResult = std::is_void_v<R> || std::convertible_to<R, bool>;

// One concept per hook, so a callback can be checked hook by hook.
template <class C>
concept HasOnTrainBegin = requires(C& c, TrainContext& ctx) {
  { c.on_train_begin(ctx) } -> HookResult;
};
template <class C>
concept HasOnEpochBegin = requires(C& c, TrainContext& ctx) {
  { c.on_epoch_begin(ctx) } -> HookResult;
};
template <class C>
concept HasOnStepBegin = requires(C& c, TrainContext& ctx) {
  { c.on_step_begin(ctx) } -> HookResult;
};
template <class C>
concept HasOnGradients = requires(C& c, TrainContext& ctx) {
  { c.on_gradients(ctx) } -> HookResult;
};
template <class C>
concept HasOnStepEnd = requires(C& c, TrainContext& ctx, float loss, Index step) {
  { c.on_step_end(ctx, loss, step) } -> HookResult;
};
template <class C>
concept HasOnEpochEnd = requires(C& c, TrainContext& ctx) {
  { c.on_epoch_end(ctx) } -> HookResult;
};
template <class C>
concept HasOnEvaluate = requires(C& c, TrainContext& ctx, const Metrics& metrics) {
  { c.on_evaluate(ctx, metrics) } -> HookResult;
};
template <class C>
concept HasOnTrainEnd = requires(C& c, TrainContext& ctx) {
  { c.on_train_end(ctx) } -> HookResult;
};

/// A callback has at least one hook of the documented signatures (a type with
/// none is almost surely a misspelt hook).
template <class C>
concept Callback = std::is_object_v<C> &&
    (HasOnTrainBegin<C> || HasOnEpochBegin<C> || HasOnStepBegin<C> || HasOnGradients<C> || HasOnStepEnd<C> ||
     HasOnEpochEnd<C> || HasOnEvaluate<C> || HasOnTrainEnd<C>);

/// The hooks, for dispatch by the trainer.
enum class Hook { TrainBegin, EpochBegin, StepBegin, Gradients, StepEnd, EpochEnd, Evaluate, TrainEnd };

namespace detail {
/// Runs `call()` and reads its result as a stop request (void = continue).
template <class Call>
bool stop_requested(Call&& call) {
  if constexpr (std::is_void_v<decltype(call())>) {
    call();
    return false;
  } else {
    return static_cast<bool>(call());
  }
}

/// Calls hook H of `c` if it has one; true = stop. on_step_end gets (ctx.loss,
/// ctx.step), on_evaluate gets `*metrics`.
template <Hook H, class C>
bool call_hook(C& c, TrainContext& ctx, const Metrics* metrics = nullptr) {
  if constexpr (H == Hook::TrainBegin && HasOnTrainBegin<C>)
    return stop_requested([&] { return c.on_train_begin(ctx); });
  if constexpr (H == Hook::EpochBegin && HasOnEpochBegin<C>)
    return stop_requested([&] { return c.on_epoch_begin(ctx); });
  if constexpr (H == Hook::StepBegin && HasOnStepBegin<C>) return stop_requested([&] { return c.on_step_begin(ctx); });
  if constexpr (H == Hook::Gradients && HasOnGradients<C>) return stop_requested([&] { return c.on_gradients(ctx); });
  if constexpr (H == Hook::StepEnd && HasOnStepEnd<C>)
    return stop_requested([&] { return c.on_step_end(ctx, ctx.loss, ctx.step); });
  if constexpr (H == Hook::EpochEnd && HasOnEpochEnd<C>) return stop_requested([&] { return c.on_epoch_end(ctx); });
  if constexpr (H == Hook::Evaluate && HasOnEvaluate<C>)
    return stop_requested([&] { return c.on_evaluate(ctx, *metrics); });
  if constexpr (H == Hook::TrainEnd && HasOnTrainEnd<C>) return stop_requested([&] { return c.on_train_end(ctx); });
  (void)c, (void)ctx, (void)metrics;
  return false;
}

inline std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0.0) return "--:--";
  const auto total = static_cast<long long>(seconds + 0.5);
  std::ostringstream out;
  out << std::setfill('0');
  if (total >= 3600) out << total / 3600 << ':' << std::setw(2);
  out << (total / 60) % 60 << ':' << std::setw(2) << total % 60;
  return out.str();
}
}  // namespace detail

/// One status line rewritten in place with '\r': a bar, step / total, epoch,
/// loss, throughput in examples/s (this run) and the estimated time left.
class ProgressBar {
 public:
  explicit ProgressBar(std::ostream& out, int width = 30) : out_(&out), width_(width) {}

  void on_train_begin(TrainContext&) { start_ = std::chrono::steady_clock::now(); }
  void on_step_end(TrainContext& ctx, float loss, Index step) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double total = static_cast<double>(std::max<Index>(ctx.total_steps, 1));
    const auto filled = static_cast<int>(width_ * std::min(1.0, static_cast<double>(step) / total));
    const double per_step = elapsed / static_cast<double>(std::max<Index>(ctx.steps_this_run, 1));
    const double throughput = elapsed > 0.0 ? static_cast<double>(ctx.examples_seen) / elapsed : 0.0;
    *out_ << '\r' << '[' << std::string(static_cast<std::size_t>(filled), '=')
          << std::string(static_cast<std::size_t>(width_ - filled), ' ') << "] " << step << '/' << ctx.total_steps
          << " epoch " << ctx.epoch + 1 << '/' << ctx.epochs << " loss " << std::fixed << std::setprecision(4) << loss
          << ' ' << std::setprecision(1) << throughput << " ex/s ETA "
          << detail::format_duration(per_step * static_cast<double>(ctx.total_steps - step)) << std::flush;
    out_->unsetf(std::ios::floatfield);
  }
  void on_train_end(TrainContext&) { *out_ << '\n' << std::flush; }

 private:
  std::ostream* out_;
  int width_;
  std::chrono::steady_clock::time_point start_{};
};

/// Calls `evaluate()` every `every_steps` steps (0: never) and / or at the end
/// of every epoch, and reports its metrics to all callbacks' on_evaluate. The
/// function must leave the model in training mode or the trainer resets it at
/// the next step anyway.
class PeriodicEvaluation {
 public:
  PeriodicEvaluation(std::function<Metrics()> evaluate, Index every_steps, bool each_epoch = true)
      : evaluate_(std::move(evaluate)), every_steps_(every_steps), each_epoch_(each_epoch) {
    check<ValueError>(static_cast<bool>(evaluate_), "PeriodicEvaluation: no evaluation function given");
    check<ValueError>(every_steps >= 0, "PeriodicEvaluation: every_steps ", every_steps, " is negative");
  }

  void on_step_end(TrainContext& ctx, float, Index step) {
    if (every_steps_ > 0 && step % every_steps_ == 0) ctx.report(evaluate_());
  }
  void on_epoch_end(TrainContext& ctx) {
    if (each_epoch_) ctx.report(evaluate_());
  }

 private:
  std::function<Metrics()> evaluate_;
  Index every_steps_;
  bool each_epoch_;
};

/// Whether a larger or a smaller metric is better.
enum class Goal { Maximize, Minimize };

/// Stops when `metric` has not improved by more than `min_delta` over the best
/// value so far for `patience` evaluations in a row. Values are compared at
/// float precision, the precision its checkpointed state keeps, so a resumed
/// run (Trainer::track_state) stops where an uninterrupted one would.
class EarlyStopping {
 public:
  EarlyStopping(std::string metric, Index patience, Goal goal = Goal::Maximize, double min_delta = 0.0)
      : metric_(std::move(metric)), patience_(patience), goal_(goal), min_delta_(min_delta) {
    check<ValueError>(patience >= 1 && patience <= kMaxStale, "EarlyStopping: patience ", patience,
                      " must be in [1, ", kMaxStale, "]");
    check<ValueError>(min_delta >= 0.0, "EarlyStopping: min_delta ", min_delta, " is negative");
  }

  bool on_evaluate(TrainContext&, const Metrics& metrics) {
    const auto it = metrics.find(metric_);
    check<ValueError>(it != metrics.end(), "EarlyStopping: the evaluation reported no metric '", metric_, "'");
    check<NumericError>(!std::isnan(it->second), "EarlyStopping: metric '", metric_, "' is NaN");
    const auto value = static_cast<float>(goal_ == Goal::Maximize ? it->second : -it->second);
    if (static_cast<double>(value) > static_cast<double>(best_) + min_delta_) {
      best_ = value;
      stale_ = 0;
    } else {
      stale_ = std::min(stale_ + 1, kMaxStale);
    }
    return stale_ >= patience_;
  }

  /// The best value seen (in the metric's own sign; float precision).
  [[nodiscard]] double best() const { return goal_ == Goal::Maximize ? best_ : -best_; }

  // CheckpointState: the best value (in the compared sign) and the evaluations since.
  [[nodiscard]] StateTensors export_state() const {
    return {{"best", HostMatrix(1, 1, {best_})}, {"stale", HostMatrix(1, 1, {static_cast<float>(stale_)})}};
  }
  void check_state(const StateTensors& state) const {
    const auto scalar = [&](const char* key) {
      const auto it = state.find(key);
      check<ValueError>(it != state.end() && it->second.rows() == 1 && it->second.cols() == 1,
                        "EarlyStopping('", metric_, "') state: expected a 1 x 1 tensor '", key, "'");
      return it->second(0, 0);
    };
    const float best = scalar("best"), stale = scalar("stale");
    check<ValueError>(state.size() == 2 && !std::isnan(best),
                      "EarlyStopping('", metric_, "') state: expected only 'best' (not NaN) and 'stale'");
    check<ValueError>(stale >= 0.0f && stale <= static_cast<float>(kMaxStale) && stale == std::floor(stale),
                      "EarlyStopping('", metric_, "') state: 'stale' is ", stale, ", expected a count in [0, ",
                      kMaxStale, "]");
  }
  void import_state(const StateTensors& state) {
    check_state(state);
    best_ = state.at("best")(0, 0);
    stale_ = static_cast<Index>(state.at("stale")(0, 0));
  }

 private:
  static constexpr Index kMaxStale = Index{1} << 24;  // counts a float holds exactly

  std::string metric_;
  Index patience_;
  Goal goal_;
  double min_delta_;
  float best_ = -std::numeric_limits<float>::infinity();
  Index stale_ = 0;
};

static_assert(Callback<ProgressBar> && Callback<PeriodicEvaluation> && Callback<EarlyStopping>);
static_assert(CheckpointState<EarlyStopping>);

}  // namespace plora
