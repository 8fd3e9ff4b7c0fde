// The runners' RunHistory (examples/common/pipeline.hpp): the history a
// resumed run restores from its training state, and the states it refuses;
// and how the shared options parse --targets (examples/common/options.hpp).
#include <doctest/doctest.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common/pipeline.hpp"

using namespace plora;
using plora::runner::RunHistory;

namespace {
/// A history of a 3-epoch run of 4 batches per epoch after epoch 1 and 2 steps of epoch 2.
RunHistory partway() {
  RunHistory history("accuracy", 3, 4);
  TrainContext ctx;
  for (const float loss : {1.0f, 0.75f, 0.5f, 0.25f}) history.on_step_end(ctx, loss, 0);
  history.on_evaluate(ctx, {{"accuracy", 0.5}});
  for (const float loss : {0.5f, 0.125f}) history.on_step_end(ctx, loss, 0);
  return history;
}

/// The saved row of partway() with entry `index` set to `value`.
StateTensors edited(std::size_t index, float value) {
  StateTensors state = partway().export_state();
  state.at("history").values()[index] = value;
  return state;
}
}  // namespace

TEST_CASE("a restored run history reports what the saved one would") {
  const RunHistory saved = partway();
  RunHistory restored("accuracy", 3, 4);
  restored.import_state(saved.export_state());
  REQUIRE(restored.entries().size() == 1);
  CHECK(restored.entries()[0].epoch == 1);
  CHECK(restored.entries()[0].train_loss == 0.625f);  // (1 + 0.75 + 0.5 + 0.25) / 4, exact in float
  CHECK(restored.entries()[0].metric == 0.5f);
  TrainContext ctx;
  ctx.epoch = 1;
  RunHistory original = partway();
  for (RunHistory* history : {&original, &restored}) {
    history->on_step_end(ctx, 0.25f, 0);
    history->on_evaluate(ctx, {{"accuracy", 0.75}});
  }
  REQUIRE(restored.entries().size() == 2);
  CHECK(restored.entries()[1].train_loss == original.entries()[1].train_loss);
  CHECK(restored.entries()[1].train_loss == doctest::Approx((0.5 + 0.125 + 0.25) / 3).epsilon(1e-7));
}

TEST_CASE("a run history no run could have written is refused, naming what is wrong") {
  const RunHistory history("accuracy", 3, 4);
  // Row: [loss sum, its rounding error, steps of the current epoch, (epoch, loss, metric) per entry].
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const struct {
    std::size_t index;
    float value;
    const char* message;
  } cases[] = {{0, nan, "holds a NaN or Inf"},
               {0, -1000.0f, "sums a loss of -1000 over 2 steps"},
               {2, 1e9f, "over 1e+09 steps"},
               {2, 1.5f, "a whole number of steps"},
               {3, 9.0f, "entry 0 is (epoch 9"},
               {4, -0.5f, "a loss >= 0"},
               {5, 7.0f, "accuracy 7); expected epoch 1, a loss >= 0 and a metric in [-1, 1]"},
               {5, nan, "holds a NaN or Inf"}};
  for (const auto& c : cases) {
    CAPTURE(c.index);
    CAPTURE(c.value);
    CHECK_THROWS_WITH_AS(history.check_state(edited(c.index, c.value)), doctest::Contains(c.message), ValueError);
  }
  // More evaluations than the run has epochs.
  StateTensors four = partway().export_state();
  const auto& saved = four.at("history").values();
  std::vector<float> row(saved.begin(), saved.end());
  for (const float epoch : {2.0f, 3.0f, 4.0f}) row.insert(row.end(), {epoch, 0.5f, 0.5f});
  four.at("history") = HostMatrix(1, static_cast<Index>(row.size()), std::move(row));
  CHECK_THROWS_WITH_AS(history.check_state(four), doctest::Contains("4 evaluations, more than this run's 3 epochs"),
                       ValueError);
  CHECK_NOTHROW(history.check_state(partway().export_state()));
}

TEST_CASE("--targets: comma lists split with empty items kept, repeated options joined, the default otherwise") {
  const auto parsed = [](std::vector<std::string> args) {
    CLI::App app;
    runner::RunOptions options;
    runner::add_run_options(app, options);
    args.insert(args.begin(), "runner");
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    app.parse(static_cast<int>(argv.size()), argv.data());
    return options.targets;
  };
  using Targets = std::vector<std::string>;
  CHECK(parsed({}) == Targets{"query", "value"});
  CHECK(parsed({"--targets", "query,key,output.dense"}) == Targets{"query", "key", "output.dense"});
  CHECK(parsed({"--targets", "query", "--targets", "key,value"}) == Targets{"query", "key", "value"});
  CHECK(parsed({"--targets", "query,,value"}) == Targets{"query", "", "value"});  // validate() refuses it
  CHECK(parsed({"--targets", "query,"}) == Targets{"query", ""});
  runner::RunOptions options;
  options.targets = runner::split_commas({"query,,value"});
  CHECK_THROWS_WITH_AS(runner::validate(options), "--targets: '' is not a module name (a list like query,value)",
                       ValueError);
}
