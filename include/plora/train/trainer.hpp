#pragma once
// The generic training loop over any Model and any BatchSource. Per step:
//
//   on_step_begin -> zero_grad -> forward_backward -> finite check ->
//   on_gradients (then the finite check again) -> clip ->
//   lr = base * schedule(step) -> optimizer step -> on_step_end
// (see callbacks.hpp for the hook list)
//
// The loop's position (epoch, batch in epoch, step) and the losses not yet
// logged are its whole state: batches are a pure function of (epoch, index),
// so restoring a TrainerState together with the parameters, the optimizer
// state and the tracked random streams and states (checkpoint.hpp) continues
// a run exactly.
#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "plora/core/error.hpp"
#include "plora/core/rng.hpp"
#include "plora/models/concepts.hpp"
#include "plora/train/callbacks.hpp"
#include "plora/train/clip.hpp"
#include "plora/train/concepts.hpp"
#include "plora/train/guard.hpp"
#include "plora/train/optimizer_concepts.hpp"
#include "plora/train/schedule.hpp"

namespace plora {

struct TrainerConfig {
  Index epochs = 1;
  std::optional<Index> max_steps{};   ///< stop after this many optimizer steps in total
  std::optional<double> grad_clip{};  ///< max L2 norm of all gradients together
  Index log_every = 0;                ///< record the mean loss every this many steps (0: never)
  std::uint64_t seed = 0;             ///< the run's seed; a checkpoint resumes only under the same one
  bool check_finite = true;           ///< throw NumericError on a NaN / Inf loss or gradient
  /// What else the run's course depends on, as the caller names and spells it
  /// (say "lr" -> "0.0003"): saved in checkpoints, and a checkpoint resumes
  /// only under the same settings, so a resume cannot silently change the run.
  std::map<std::string, std::string> settings{};
};

/// Which run this is (its seed and settings) and where it is: the next batch
/// is (epoch, batch_in_epoch); `step` optimizer steps are done; the losses of
/// the steps since the last log entry sum to `window_loss` over
/// `window_steps` (so a resumed run logs the same means).
struct TrainerState {
  std::uint64_t seed = 0;
  std::map<std::string, std::string> settings{};
  Index epoch = 0;
  Index batch_in_epoch = 0;
  Index step = 0;
  double window_loss = 0.0;
  Index window_steps = 0;
};

/// Mean training loss over the `log_every` steps ending at `step`.
struct LogEntry {
  Index step = 0;
  Index epoch = 0;
  double loss = 0.0;
  double lr = 0.0;
};

struct EvaluationRecord {
  Index step = 0;
  Index epoch = 0;
  Metrics metrics;
};

struct TrainResult {
  Index steps = 0;       ///< optimizer steps taken in total (including before a resume)
  bool stopped = false;  ///< a callback asked to stop
  float last_loss = 0.0f;
  std::vector<LogEntry> log;
  std::vector<EvaluationRecord> evaluations;
};

/// Steps a run of `config` over `batches_per_epoch` batches per epoch takes
/// unless stopped early (what a decaying schedule needs as its total).
inline Index planned_steps(const TrainerConfig& config, Index batches_per_epoch) {
  check<ValueError>(batches_per_epoch <= 0 || config.epochs <= std::numeric_limits<Index>::max() / batches_per_epoch,
                    "Trainer: ", config.epochs, " epochs of ", batches_per_epoch,
                    " batches are more steps than a step counter holds");
  const Index full = config.epochs * batches_per_epoch;
  return config.max_steps ? std::min(full, *config.max_steps) : full;
}

/// @tparam M  a Model; its parameters() are what the optimizer updates
/// @tparam O  an Optimizer on the model's backend
/// @tparam S  an LrSchedule (multiplier of the optimizer's base rate per step)
template <Model M, Optimizer O, LrSchedule S = ConstantSchedule>
class Trainer {
 public:
  using BackendType = typename M::BackendType;
  static_assert(std::same_as<typename O::BackendType, BackendType>,
                "Trainer: the optimizer must run on the model's backend");

  Trainer(M& model, O& optimizer, TrainerConfig config, S schedule = S{})
      : model_(&model), optimizer_(&optimizer), config_(std::move(config)), schedule_(std::move(schedule)) {
    check<ValueError>(config_.epochs >= 1, "Trainer: epochs ", config_.epochs, " must be at least 1");
    check<ValueError>(!config_.max_steps || *config_.max_steps >= 0, "Trainer: max_steps ",
                      config_.max_steps.value_or(0), " is negative");
    check<ValueError>(!config_.grad_clip || *config_.grad_clip > 0.0, "Trainer: grad_clip ",
                      config_.grad_clip.value_or(0.0), " must be positive");
    check<ValueError>(config_.log_every >= 0, "Trainer: log_every ", config_.log_every, " is negative");
    state_.seed = config_.seed;
    state_.settings = config_.settings;
  }

  /// Trains from the current state to the end of the configured epochs (or
  /// max_steps), calling the hooks of `callbacks` (see callbacks.hpp).
  template <BatchSource Source, class... Callbacks>
  requires(Callback<std::remove_cvref_t<Callbacks>>&&...) TrainResult
      fit(const Source& source, Callbacks&&... callbacks) {
    static_assert(std::convertible_to<typename Source::Batch, const typename M::Batch&>,
                  "Trainer::fit: the source's batches must be the model's Batch type");
    const Index per_epoch = source.batches_per_epoch();
    check<ValueError>(per_epoch > 0, "Trainer::fit: the batch source has no batches");
    check<ValueError>(state_.batch_in_epoch <= per_epoch, "Trainer::fit: resuming at batch ", state_.batch_in_epoch,
                      " of an epoch of ", per_epoch, " batches (was the checkpoint made with another data set?)");
    // Each step advances the batch, each ended epoch resets it: the step count follows from the position.
    const Index position = state_.epoch * per_epoch + state_.batch_in_epoch;
    check<ValueError>(state_.step == position, "Trainer::fit: resuming at step ", state_.step, ", but epoch ",
                      state_.epoch, " batch ", state_.batch_in_epoch, " of epochs of ", per_epoch, " batches is step ",
                      position);
    const Index total_steps = planned_steps(config_, per_epoch);
    check<ValueError>(state_.step <= total_steps, "Trainer::fit: resuming at step ", state_.step, " of a run of ",
                      total_steps, " steps");

    TrainResult result;
    TrainContext ctx;
    ctx.epochs = config_.epochs;
    ctx.batches_per_epoch = per_epoch;
    ctx.total_steps = total_steps;
    ctx.step = state_.step;
    auto params = model_->parameters();

    const auto notify = [&]<Hook H>() {
      bool stop = false;
      ((stop = detail::call_hook<H>(callbacks, ctx) || stop), ...);
      while (!ctx.reported.empty()) {
        for (const Metrics& metrics : std::exchange(ctx.reported, {})) {
          result.evaluations.push_back({state_.step, ctx.epoch, metrics});
          ((stop = detail::call_hook<Hook::Evaluate>(callbacks, ctx, &metrics) || stop), ...);
        }
      }
      return stop;
    };
    const auto more_steps = [&] { return state_.step < ctx.total_steps; };

    model_->set_training(true);
    bool stop = notify.template operator()<Hook::TrainBegin>();
    while (!stop && state_.epoch < config_.epochs && more_steps()) {
      ctx.epoch = state_.epoch;
      if (state_.batch_in_epoch == 0 && (stop = notify.template operator()<Hook::EpochBegin>())) break;
      while (state_.batch_in_epoch < per_epoch && more_steps()) {
        ctx.batch_in_epoch = state_.batch_in_epoch;
        const auto batch = source.batch(state_.epoch, state_.batch_in_epoch);
        ctx.batch_examples = examples_in(batch);
        if ((stop = notify.template operator()<Hook::StepBegin>())) break;

        model_->set_training(true);  // an evaluation callback may have switched it off
        model_->zero_grad();
        try {
          ctx.loss = model_->forward_backward(batch);
        } catch (const NumericError& error) {
          // A non-finite value the model itself finds (say, in its logits): name the step and the
          // rate of this run's last update, the usual cause.
          const std::string rate =
              ctx.steps_this_run > 0 ? detail::concat(", after an update at learning rate ", ctx.lr) : "";
          throw NumericError(detail::concat("step ", state_.step, rate, ": ", error.what()));
        }
        if (config_.check_finite) check_finite<BackendType>(ctx.loss, params, state_.step);
        if ((stop = notify.template operator()<Hook::Gradients>())) break;
        // The hooks may add gradients and loss (regularisers): check those too before they reach the weights.
        if constexpr ((HasOnGradients<std::remove_cvref_t<Callbacks>> || ...))
          if (config_.check_finite)
            check_finite<BackendType>(ctx.loss, params, state_.step, " after the on_gradients hooks");
        ctx.grad_norm = config_.grad_clip ? clip_grad_norm<BackendType>(params, *config_.grad_clip) : 0.0;
        optimizer_->set_lr_scale(schedule_(state_.step));
        ctx.lr = optimizer_->lr();
        optimizer_->step(params);

        ++state_.step;
        ++state_.batch_in_epoch;
        ctx.step = state_.step;
        ++ctx.steps_this_run;
        ctx.examples_seen += ctx.batch_examples;
        result.last_loss = ctx.loss;
        state_.window_loss += ctx.loss;
        ++state_.window_steps;
        ctx.logged_loss.reset();
        if (config_.log_every > 0 && state_.step % config_.log_every == 0) {
          ctx.logged_loss = state_.window_loss / static_cast<double>(state_.window_steps);
          result.log.push_back({state_.step, state_.epoch, *ctx.logged_loss, ctx.lr});
          state_.window_loss = 0.0;
          state_.window_steps = 0;
        }
        if ((stop = notify.template operator()<Hook::StepEnd>())) break;
      }
      if (stop || state_.batch_in_epoch < per_epoch) break;
      // Advance first, so a checkpoint written at epoch end resumes at the next epoch.
      ++state_.epoch;
      state_.batch_in_epoch = 0;
      stop = notify.template operator()<Hook::EpochEnd>();
    }
    notify.template operator()<Hook::TrainEnd>();
    result.steps = state_.step;
    result.stopped = stop;
    return result;
  }

  [[nodiscard]] const TrainerState& state() const { return state_; }
  /// Continues from `state` at the next fit(); see check_restorable.
  void restore(const TrainerState& state) {
    check_restorable(state);
    state_ = state;
  }
  /// Throws unless `state` is of this run's seed and settings and at a
  /// non-negative position; a difference in settings is named.
  void check_restorable(const TrainerState& state) const {
    check<ValueError>(state.seed == config_.seed, "Trainer: cannot resume a run of seed ", state.seed, " under seed ",
                      config_.seed);
    for (const auto& [name, value] : config_.settings) {
      const auto saved = state.settings.find(name);
      check<ValueError>(saved != state.settings.end(), "Trainer: cannot resume: the saved run has no setting ", name,
                        " (this run: ", value, ")");
      check<ValueError>(saved->second == value, "Trainer: cannot resume a run of ", name, " ", saved->second,
                        " under ", name, " ", value);
    }
    for (const auto& [name, value] : state.settings)
      check<ValueError>(config_.settings.contains(name), "Trainer: cannot resume: the saved run has setting ", name,
                        " ", value, ", which this run lacks");
    check<ValueError>(state.epoch >= 0 && state.batch_in_epoch >= 0 && state.step >= 0 && state.window_steps >= 0,
                      "Trainer: negative position in the trainer state");
    check<ValueError>(state.window_steps <= state.step, "Trainer: the logged loss window holds ", state.window_steps,
                      " steps, more than the ", state.step, " taken");
    check<ValueError>(std::isfinite(state.window_loss), "Trainer: the logged loss window sums to ",
                      state.window_loss);
  }

  /// Registers a random stream whose offset is saved and restored with the
  /// checkpoint (e.g. an adapter's dropout stream). It must outlive the trainer.
  void track_stream(std::string name, RandomStream& stream) {
    for (const auto& entry : streams_)
      check<ValueError>(entry.first != name, "Trainer: a stream named '", name, "' is already tracked");
    streams_.emplace_back(std::move(name), &stream);
  }
  [[nodiscard]] const std::vector<std::pair<std::string, RandomStream*>>& tracked_streams() const { return streams_; }

  /// An object whose state checkpoints save and restore with the run's (e.g.
  /// AdaLoRA's RankAllocator). It must outlive the trainer; `name` holds no '/'.
  struct TrackedState {
    std::function<StateTensors()> export_state;
    std::function<void(const StateTensors&)> check_state, import_state;
  };
  template <CheckpointState State>
  void track_state(std::string name, State& object) {
    check<ValueError>(!name.empty() && name.find('/') == std::string::npos, "Trainer: state name '", name,
                      "' must be non-empty and hold no '/'");
    check<ValueError>(!states_.contains(name), "Trainer: a state named '", name, "' is already tracked");
    states_.emplace(std::move(name), TrackedState{[&object] { return object.export_state(); },
                                                  [&object](const StateTensors& t) { object.check_state(t); },
                                                  [&object](const StateTensors& t) { object.import_state(t); }});
  }
  [[nodiscard]] const std::map<std::string, TrackedState>& tracked_states() const { return states_; }

  [[nodiscard]] M& model() const { return *model_; }
  [[nodiscard]] O& optimizer() const { return *optimizer_; }
  [[nodiscard]] const TrainerConfig& config() const { return config_; }

 private:
  template <class Batch>
  static Index examples_in(const Batch& batch) {
    if constexpr (requires { batch.size(); }) {
      return static_cast<Index>(batch.size());
    } else {
      return 1;
    }
  }

  M* model_;
  O* optimizer_;
  TrainerConfig config_;
  S schedule_;
  TrainerState state_;
  std::vector<std::pair<std::string, RandomStream*>> streams_;
  std::map<std::string, TrackedState> states_;
};

}  // namespace plora
