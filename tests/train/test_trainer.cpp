// The generic trainer on a toy LoRA regression model: it learns, runs the hooks
// in the documented order, stops when a callback asks, follows the schedule,
// clips, logs and guards against NaN.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "plora/train/train.hpp"
#include "train/toy_model.hpp"

using namespace plora;
using plora::test::ToyModel;
using plora::test::ToySource;

namespace {
/// Records every hook call as a short string.
struct Recorder {
  std::vector<std::string> calls;
  std::vector<float> losses;
  std::vector<double> lrs;
  Index stop_at_step = -1;

  void on_train_begin(TrainContext&) { calls.push_back("train_begin"); }
  void on_epoch_begin(TrainContext& ctx) { calls.push_back("epoch_begin " + std::to_string(ctx.epoch)); }
  void on_step_begin(TrainContext& ctx) { calls.push_back("step_begin " + std::to_string(ctx.batch_in_epoch)); }
  void on_gradients(TrainContext&) { calls.push_back("gradients"); }
  bool on_step_end(TrainContext& ctx, float loss, Index step) {
    calls.push_back("step_end " + std::to_string(step));
    losses.push_back(loss);
    lrs.push_back(ctx.lr);
    return step == stop_at_step;
  }
  void on_epoch_end(TrainContext& ctx) { calls.push_back("epoch_end " + std::to_string(ctx.epoch)); }
  void on_evaluate(TrainContext&, const Metrics& metrics) {
    calls.push_back("evaluate " + std::to_string(metrics.at("accuracy")));
  }
  void on_train_end(TrainContext&) { calls.push_back("train_end"); }
};

struct NoHooks {
  void on_step_finished(float) {}  // misspelt: not a hook
};

/// The mean loss over all batches of an epoch, in eval mode.
double dataset_loss(ToyModel& model, const ToySource& source) {
  double total = 0.0;
  model.set_training(false);
  for (Index i = 0; i < source.batches_per_epoch(); ++i) total += model.forward_backward(source.batch(0, i));
  model.zero_grad();
  model.set_training(true);
  return total / static_cast<double>(source.batches_per_epoch());
}
}  // namespace

static_assert(Callback<Recorder>);
static_assert(!Callback<NoHooks>);
static_assert(Callback<ProgressBar>);

TEST_CASE("the trainer fits the toy LoRA regression") {
  ToyModel model(1);
  const ToySource source(1, 2, 8, 16);
  AdamW<cpu> adamw({.lr = 0.05, .weight_decay = 0.0});
  const TrainerConfig config{.epochs = 20, .grad_clip = 1.0};
  Trainer trainer(model, adamw, config, CosineWarmupDecay(10, planned_steps(config, 8)));
  const double before = dataset_loss(model, source);
  const TrainResult result = trainer.fit(source);
  const double after = dataset_loss(model, source);
  CHECK(result.steps == 160);
  CHECK_FALSE(result.stopped);
  CHECK(trainer.state().epoch == 20);
  // The target is exactly reachable (a rank-1 change for a rank-2 LoRA); the
  // initial loss is that of the rank-1 residual, ~0.1 here. Require a 100x drop.
  CHECK(before > 0.01);
  CHECK(after < before / 100.0);
}

TEST_CASE("hooks run in the documented order") {
  ToyModel model(1);
  const ToySource source(1, 2, 2, 4);
  AdamW<cpu> adamw;
  Trainer trainer(model, adamw, {.epochs = 2});
  Recorder recorder;
  PeriodicEvaluation evaluation([] { return Metrics{{"accuracy", 0.5}}; }, 3, false);
  trainer.fit(source, recorder, evaluation);
  const std::vector<std::string> expected{"train_begin", "epoch_begin 0",     "step_begin 0", "gradients",
                                          "step_end 1",  "step_begin 1",      "gradients",    "step_end 2",
                                          "epoch_end 0", "epoch_begin 1",     "step_begin 0", "gradients",
                                          "step_end 3",  "evaluate 0.500000", "step_begin 1", "gradients",
                                          "step_end 4",  "epoch_end 1",       "train_end"};
  CHECK(recorder.calls == expected);
}

TEST_CASE("a callback returning true stops training after its hook") {
  ToyModel model(1);
  const ToySource source(1, 2, 4, 4);
  AdamW<cpu> adamw;
  Trainer trainer(model, adamw, {.epochs = 3});
  Recorder recorder;
  recorder.stop_at_step = 6;
  const TrainResult result = trainer.fit(source, recorder);
  CHECK(result.stopped);
  CHECK(result.steps == 6);
  CHECK(adamw.step_count() == 6);
  CHECK(recorder.calls.back() == "train_end");
  CHECK(recorder.calls[recorder.calls.size() - 2] == "step_end 6");
  // Stopped in the middle of epoch 1: the next batch is its third.
  CHECK(trainer.state().epoch == 1);
  CHECK(trainer.state().batch_in_epoch == 2);
}

TEST_CASE("early stopping on periodic evaluations") {
  ToyModel model(1);
  const ToySource source(1, 2, 4, 4);
  AdamW<cpu> adamw;
  Trainer trainer(model, adamw, {.epochs = 5});
  // Accuracy per evaluation: improves twice, then stalls; patience 2 stops at
  // the 5th evaluation (stale after the 4th and 5th).
  const std::vector<double> accuracy{0.5, 0.6, 0.7, 0.7, 0.65, 0.9};
  std::size_t calls = 0;
  PeriodicEvaluation evaluation([&] { return Metrics{{"accuracy", accuracy.at(calls++)}}; }, 2, false);
  EarlyStopping early("accuracy", 2);
  const TrainResult result = trainer.fit(source, evaluation, early);
  CHECK(result.stopped);
  CHECK(calls == 5);
  CHECK(result.steps == 10);
  REQUIRE(result.evaluations.size() == 5);
  CHECK(result.evaluations[4].step == 10);
  CHECK(result.evaluations[4].metrics.at("accuracy") == 0.65);
  CHECK(early.best() == static_cast<double>(0.7f));  // compared and kept at float precision

  EarlyStopping lower("loss", 1, Goal::Minimize);
  TrainContext ctx;
  CHECK_FALSE(lower.on_evaluate(ctx, {{"loss", 1.0}}));
  CHECK_FALSE(lower.on_evaluate(ctx, {{"loss", 0.5}}));
  CHECK(lower.on_evaluate(ctx, {{"loss", 0.6}}));
  CHECK_THROWS_WITH_AS(lower.on_evaluate(ctx, {{"accuracy", 0.6}}), doctest::Contains("'loss'"), ValueError);
  CHECK_THROWS_WITH_AS(lower.on_evaluate(ctx, {{"loss", std::nan("")}}), doctest::Contains("metric 'loss' is NaN"),
                       NumericError);
}

TEST_CASE("learning rates follow the schedule; max_steps caps the run") {
  ToyModel model(1);
  const ToySource source(1, 2, 4, 4);
  AdamW<cpu> adamw({.lr = 0.2});
  const TrainerConfig config{.epochs = 10, .max_steps = 7};
  CHECK(planned_steps(config, 4) == 7);
  // epochs x batches beyond a step counter: refused, not wrapped to a negative total.
  const TrainerConfig endless{.epochs = std::numeric_limits<Index>::max() / 2};
  CHECK_THROWS_WITH_AS((void)planned_steps(endless, 3), doctest::Contains("more steps than a step counter holds"),
                       ValueError);
  CHECK(planned_steps(endless, 2) == std::numeric_limits<Index>::max() - 1);
  Trainer trainer(model, adamw, config, LinearWarmupDecay(2, 7));
  Recorder recorder;
  const TrainResult result = trainer.fit(source, recorder);
  CHECK(result.steps == 7);
  CHECK_FALSE(result.stopped);
  // Steps 0..6 get 0.2 * {0, 1/2, 1, 4/5, 3/5, 2/5, 1/5}.
  const std::vector<double> expected{0.0, 0.1, 0.2, 0.16, 0.12, 0.08, 0.04};
  REQUIRE(recorder.lrs.size() == expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i)
    CHECK(recorder.lrs[i] == doctest::Approx(expected[i]).epsilon(1e-12));
  CHECK(trainer.fit(source).steps == 7);  // nothing left to do
}

TEST_CASE("gradients are clipped before the step and still there after it") {
  ToyModel model(1);
  const ToySource source(1, 2, 2, 4);
  AdamW<cpu> adamw;
  Trainer trainer(model, adamw, {.epochs = 1, .grad_clip = 1e-3});
  struct Probe {
    ToyModel* model;
    std::vector<double> before, after;
    void on_step_end(TrainContext& ctx, float, Index) {
      before.push_back(ctx.grad_norm);
      after.push_back(grad_norm<cpu>(model->parameters()));
    }
  } probe{&model, {}, {}};
  trainer.fit(source, probe);
  REQUIRE(probe.after.size() == 2);
  for (std::size_t i = 0; i < 2; ++i) {
    CHECK(probe.before[i] > 1e-2);  // far above the threshold, so clipping acted
    // Clipped norm = 1e-3 * norm / (norm + 1e-6): within 1e-4 relative of 1e-3.
    CHECK(probe.after[i] == doctest::Approx(1e-3).epsilon(1e-4));
  }
}

TEST_CASE("the loss log averages log_every steps; callbacks see each entry's mean") {
  ToyModel model(1);
  const ToySource source(1, 2, 3, 4);
  AdamW<cpu> adamw;
  Trainer trainer(model, adamw, {.epochs = 2, .log_every = 2});
  Recorder recorder;
  struct LogWatcher {
    std::vector<std::optional<double>> seen;  // ctx.logged_loss at each on_step_end
    void on_step_end(TrainContext& ctx, float, Index) { seen.push_back(ctx.logged_loss); }
  } watcher;
  const TrainResult result = trainer.fit(source, recorder, watcher);
  REQUIRE(result.log.size() == 3);
  REQUIRE(watcher.seen.size() == 6);
  for (std::size_t k = 0; k < 3; ++k) {
    CHECK(result.log[k].step == 2 * Index(k) + 2);
    const double mean = (double(recorder.losses[2 * k]) + double(recorder.losses[2 * k + 1])) / 2.0;
    CHECK(result.log[k].loss == doctest::Approx(mean).epsilon(1e-12));
    CHECK_FALSE(watcher.seen[2 * k].has_value());  // steps 1, 3, 5 close no window
    REQUIRE(watcher.seen[2 * k + 1].has_value());
    CHECK(*watcher.seen[2 * k + 1] == result.log[k].loss);  // the same double, not a recomputation
  }
  CHECK(result.log[1].epoch == 1);  // step 4 is the first of epoch 1
  CHECK(result.last_loss == recorder.losses.back());
}

TEST_CASE("the progress bar rewrites one line with loss, throughput and ETA") {
  ToyModel model(1);
  const ToySource source(1, 2, 3, 4);
  AdamW<cpu> adamw;
  Trainer trainer(model, adamw, {.epochs = 2});
  std::ostringstream out;
  ProgressBar bar(out, 10);
  trainer.fit(source, bar);
  const std::string text = out.str();
  CHECK(std::count(text.begin(), text.end(), '\r') == 6);
  CHECK(text.find("] 6/6 epoch 2/2 loss ") != std::string::npos);
  CHECK(text.find("[==========]") != std::string::npos);
  CHECK(text.find("[=====     ] 3/6") != std::string::npos);
  CHECK(text.find(" ex/s ETA ") != std::string::npos);
  CHECK(text.back() == '\n');
}

TEST_CASE("a non-finite loss stops training with a NumericError") {
  struct NanSource {
    using Batch = plora::test::ToyBatch;
    ToySource inner{1, 2, 2, 4};
    [[nodiscard]] Index batches_per_epoch() const { return 2; }
    [[nodiscard]] Batch batch(Index epoch, Index i) const {
      Batch b = inner.batch(epoch, i);
      if (epoch == 1) b.x(0, 0) = std::numeric_limits<float>::quiet_NaN();
      return b;
    }
  };
  ToyModel model(1);
  AdamW<cpu> adamw;
  Trainer trainer(model, adamw, {.epochs = 2});
  CHECK_THROWS_WITH_AS(trainer.fit(NanSource{}), doctest::Contains("step 2: the loss is"), NumericError);

  // One the model finds itself (a cross-entropy over NaN logits) is named with the step and the last rate.
  struct DivergesAtStep3 : ToyModel {
    using ToyModel::ToyModel;
    Index calls = 0;
    float forward_backward(const plora::test::ToyBatch& batch) {
      if (calls++ == 3) throw NumericError("cross-entropy: the logits hold NaN or Inf");
      return ToyModel::forward_backward(batch);
    }
  };
  DivergesAtStep3 diverging(1);
  AdamW<cpu> fast({.lr = 0.25});
  Trainer failing(diverging, fast, {.epochs = 4});
  CHECK_THROWS_WITH_AS(failing.fit(ToySource(1, 2, 2, 4)),
                       "step 3, after an update at learning rate 0.25: cross-entropy: the logits hold NaN or Inf",
                       NumericError);
}

TEST_CASE("NaN or Inf added by an on_gradients hook stops training before the weights change") {
  // A hook adding a regulariser's gradients or loss can bring in NaN after the
  // first check; the second check stops the step before the optimizer runs.
  struct PoisonAtStep2 {
    ParameterList<Host> params;
    bool gradient;                   // poison a gradient, else the loss
    std::vector<HostMatrix> before;  // the weights as the poisoned step found them
    void on_gradients(TrainContext& ctx) {
      if (ctx.step != 2) return;
      for (const auto& param : params) before.push_back(to_host<cpu>(param.value));
      if (gradient)
        params[0].grad(0, 0) = std::numeric_limits<float>::quiet_NaN();
      else
        ctx.loss = std::numeric_limits<float>::infinity();
    }
  };
  for (const bool gradient : {true, false}) {
    CAPTURE(gradient);
    ToyModel model(1);
    AdamW<cpu> adamw;
    Trainer trainer(model, adamw, {.epochs = 1});
    PoisonAtStep2 poison{model.parameters(), gradient, {}};
    CHECK_THROWS_WITH_AS(trainer.fit(ToySource(1, 2, 4, 4), poison),
                         doctest::Contains(gradient ? "step 2: the gradient of parameter 'toy.proj.lora_A' contains "
                                                      "NaN or Inf after the on_gradients hooks"
                                                    : "step 2: the loss is inf after the on_gradients hooks"),
                         NumericError);
    REQUIRE(poison.before.size() == poison.params.size());
    for (std::size_t i = 0; i < poison.params.size(); ++i)
      CHECK(plora::test::max_abs_diff(poison.params[i].value, poison.before[i].view()) == 0.0);
  }
}

TEST_CASE("resuming mid-epoch skips on_epoch_begin; configs and states are checked") {
  ToyModel model(1);
  const ToySource source(1, 2, 4, 4);
  AdamW<cpu> adamw;
  Trainer trainer(model, adamw, {.epochs = 1, .seed = 5});
  trainer.restore({.seed = 5, .epoch = 0, .batch_in_epoch = 3, .step = 3});
  Recorder recorder;
  CHECK(trainer.fit(source, recorder).steps == 4);
  const std::vector<std::string> expected{"train_begin", "step_begin 3", "gradients",
                                          "step_end 4",  "epoch_end 0",  "train_end"};
  CHECK(recorder.calls == expected);
  CHECK_THROWS_AS(trainer.restore({.seed = 6}), ValueError);
  // A position no run of 4 batches per epoch reaches, and one past the run's end.
  Trainer inconsistent(model, adamw, {.epochs = 2, .seed = 5});
  inconsistent.restore({.seed = 5, .epoch = 1, .batch_in_epoch = 1, .step = 3});
  CHECK_THROWS_WITH_AS(inconsistent.fit(source),
                       "Trainer::fit: resuming at step 3, but epoch 1 batch 1 of epochs of 4 batches is step 5",
                       ValueError);
  inconsistent.restore({.seed = 5, .epoch = 3, .batch_in_epoch = 0, .step = 12});
  CHECK_THROWS_WITH_AS(inconsistent.fit(source), "Trainer::fit: resuming at step 12 of a run of 8 steps", ValueError);
  CHECK_THROWS_AS(Trainer(model, adamw, {.epochs = 0}), ValueError);
  CHECK_THROWS_AS(Trainer(model, adamw, {.epochs = 1, .grad_clip = -1.0}), ValueError);
  CHECK_THROWS_AS(PeriodicEvaluation(nullptr, 1), ValueError);
  CHECK_THROWS_AS(EarlyStopping("accuracy", 0), ValueError);
}
