// Checkpoints: resuming continues bitwise exactly; a failed write leaves the
// previous checkpoint loadable; mismatched models, seeds, settings and files are refused.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "plora/io/safetensors.hpp"
#include "plora/train/checkpoint.hpp"
#include "plora/train/train.hpp"
#include "train/toy_model.hpp"

using namespace plora;
using plora::test::ToyModel;
using plora::test::ToySource;

namespace {
constexpr Index kTotal = 13, kBatches = 4;

/// A fresh scratch directory per test.
std::filesystem::path scratch_dir(const std::string& name) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("plora_test_checkpoint_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

/// Model (LoRA with input dropout, whose stream the trainer tracks), AdamW,
/// cosine schedule and clipping: every piece of state a resume must restore.
struct Run {
  using TrainerType = Trainer<ToyModel, AdamW<cpu>, CosineWarmupDecay>;
  ToyModel model{1, 2, 0.25f};
  AdamW<cpu> adamw{{.lr = 0.05, .weight_decay = 0.01}};
  TrainerType trainer;

  explicit Run(Index max_steps, std::uint64_t seed = 3)
      : trainer(model, adamw,
                {.epochs = 10, .max_steps = max_steps, .grad_clip = 0.5, .log_every = 4, .seed = seed},
                CosineWarmupDecay(3, kTotal)) {
    trainer.track_stream("toy.proj.dropout", model.adapter().dropout_stream());
  }
};

const ToySource& source() {
  static const ToySource s(1, 2, kBatches, 4);
  return s;
}

void check_same_state(Run& a, Run& b) {
  const auto pa = a.model.parameters(), pb = b.model.parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    CAPTURE(pa[i].name);
    CHECK(HostMatrix(pa[i].value).values() == HostMatrix(pb[i].value).values());
  }
  const OptimizerState sa = a.adamw.export_state(), sb = b.adamw.export_state();
  CHECK(sa.step == sb.step);
  REQUIRE(sa.tensors.size() == sb.tensors.size());
  for (const auto& entry : sa.tensors) {  // not a structured binding: Clang 14 cannot capture one
    CAPTURE(entry.first);
    CHECK(entry.second.values() == sb.tensors.at(entry.first).values());
  }
  CHECK(a.model.adapter().dropout_stream().offset() == b.model.adapter().dropout_stream().offset());
  CHECK(a.trainer.state().step == b.trainer.state().step);
  CHECK(a.trainer.state().epoch == b.trainer.state().epoch);
  CHECK(a.trainer.state().batch_in_epoch == b.trainer.state().batch_in_epoch);
}
}  // namespace

TEST_CASE("N steps equal k steps + checkpoint + fresh objects + N - k steps, bit for bit") {
  const auto dir = scratch_dir("resume");
  Run straight(kTotal);
  const std::vector<LogEntry> straight_log = straight.trainer.fit(source()).log;
  REQUIRE(straight.trainer.state().step == kTotal);
  REQUIRE(straight_log.size() == 3);  // steps 4, 8, 12

  // k = 6 (mid-epoch, saved by the Checkpointing callback while the run goes
  // on to step 7) and k = 8 (an epoch boundary, saved after fit returns).
  for (const Index k : {Index{6}, Index{8}}) {
    CAPTURE(k);
    const auto path = dir / plora::detail::concat("k", k, ".safetensors");
    {
      Run first(k == 6 ? 7 : k);
      Checkpointing checkpointing(first.trainer, path, 6);
      first.trainer.fit(source(), checkpointing);
      if (k == 8) save_checkpoint(path, first.trainer);
    }
    Run resumed(kTotal);
    load_checkpoint(path, resumed.trainer);
    CHECK(resumed.trainer.state().step == k);
    CHECK(resumed.adamw.step_count() == k);
    const std::vector<LogEntry> resumed_log = resumed.trainer.fit(source()).log;
    check_same_state(straight, resumed);
    // The log entries after k average the same steps' losses (the window at k
    // came with the checkpoint), to the last bit.
    const auto after_k = std::find_if(straight_log.begin(), straight_log.end(), [&](const LogEntry& e) { return e.step > k; });
    REQUIRE(resumed_log.size() == static_cast<std::size_t>(straight_log.end() - after_k));  // 8, 12 or 12
    for (std::size_t i = 0; i < resumed_log.size(); ++i) {
      CHECK(resumed_log[i].step == after_k[static_cast<std::ptrdiff_t>(i)].step);
      CHECK(resumed_log[i].loss == after_k[static_cast<std::ptrdiff_t>(i)].loss);
    }
  }

  // The dropout stream matters: a resume that forgets its offset diverges.
  Run forgetful(kTotal);
  const auto path = dir / "k6.safetensors";
  Checkpoint checkpoint = read_checkpoint(path);
  checkpoint.streams.at("toy.proj.dropout").set_offset(0);
  apply_checkpoint(forgetful.trainer, checkpoint);
  forgetful.trainer.fit(source());
  CHECK(HostMatrix(forgetful.model.adapter().lora_A()).values() !=
        HostMatrix(straight.model.adapter().lora_A()).values());
  std::filesystem::remove_all(dir);
}

TEST_CASE("tracked states travel with the checkpoint and are checked with it") {
  // A state the run depends on besides the model and the optimizer: here the
  // count of steps seen, kept by a callback (AdaLoRA's rank allocator is the real one).
  struct StepCounter {
    float steps = 0.0f;
    void on_step_end(TrainContext&, float, Index) { steps += 1.0f; }
    [[nodiscard]] StateTensors export_state() const { return {{"steps", HostMatrix(1, 1, {steps})}}; }
    void check_state(const StateTensors& t) const {
      check<ValueError>(t.size() == 1 && t.contains("steps"), "StepCounter: expected one tensor 'steps'");
    }
    void import_state(const StateTensors& t) {
      check_state(t);
      steps = t.at("steps")(0, 0);
    }
  };
  static_assert(CheckpointState<StepCounter>);
  const auto dir = scratch_dir("states");
  const auto path = dir / "ckpt.safetensors";
  Run first(5);
  StepCounter counted;
  first.trainer.track_state("counter", counted);
  first.trainer.fit(source(), counted);
  save_checkpoint(path, first.trainer);
  CHECK(io::SafetensorsFile::open(path).contains("state/counter/steps"));

  Run resumed(kTotal);
  StepCounter recounted;
  resumed.trainer.track_state("counter", recounted);
  load_checkpoint(path, resumed.trainer);
  CHECK(recounted.steps == 5.0f);
  resumed.trainer.fit(source(), recounted);
  CHECK(recounted.steps == float(kTotal));

  // A run that does not track it, or tracks another, is refused unchanged.
  Run untracked(kTotal);
  CHECK_THROWS_WITH_AS(load_checkpoint(path, untracked.trainer),
                       doctest::Contains("holds the state of 1 objects but the run tracks 0"), ValueError);
  CHECK(untracked.trainer.state().step == 0);
  Run other(kTotal);
  StepCounter elsewhere;
  other.trainer.track_state("other", elsewhere);
  CHECK_THROWS_WITH_AS(load_checkpoint(path, other.trainer), doctest::Contains("no state of 'other'"), ValueError);
  CHECK_THROWS_AS(other.trainer.track_state("a/b", elsewhere), ValueError);
  std::filesystem::remove_all(dir);
}

TEST_CASE("early stopping resumes with its best value and patience count") {
  // Accuracy after step s: 0.6, 0.7, then 0.7 for ever. Patience 3 stops an
  // uninterrupted run at step 5 (stale after steps 3, 4 and 5).
  const auto accuracy_after = [](Index step) { return step == 1 ? 0.6 : 0.7; };
  const auto run_to = [&](Run& run, EarlyStopping& early) {
    PeriodicEvaluation evaluation([&] { return Metrics{{"accuracy", accuracy_after(run.trainer.state().step)}}; }, 1,
                                  false);
    return run.trainer.fit(source(), evaluation, early);
  };
  Run straight(kTotal);
  EarlyStopping straight_early("accuracy", 3);
  const TrainResult uninterrupted = run_to(straight, straight_early);
  CHECK(uninterrupted.stopped);
  CHECK(uninterrupted.steps == 5);

  const auto dir = scratch_dir("early");
  const auto path = dir / "k3.safetensors";
  Run first(3);
  EarlyStopping first_early("accuracy", 3);
  first.trainer.track_state("early_stopping", first_early);
  CHECK_FALSE(run_to(first, first_early).stopped);
  save_checkpoint(path, first.trainer);

  Run resumed(kTotal);
  EarlyStopping resumed_early("accuracy", 3);
  resumed.trainer.track_state("early_stopping", resumed_early);
  load_checkpoint(path, resumed.trainer);
  const TrainResult continued = run_to(resumed, resumed_early);
  CHECK(continued.stopped);
  CHECK(continued.steps == 5);
  CHECK(resumed_early.best() == straight_early.best());
  check_same_state(resumed, straight);

  // Without its state the resumed run sees step 4's 0.7 as new and runs on to step 7.
  Run forgetful(kTotal);
  Checkpoint without_state = read_checkpoint(path);
  without_state.states.clear();
  apply_checkpoint(forgetful.trainer, without_state);
  EarlyStopping fresh("accuracy", 3);
  CHECK(run_to(forgetful, fresh).steps == 7);

  Checkpoint corrupt = read_checkpoint(path);
  corrupt.states.at("early_stopping").at("stale") = HostMatrix(1, 1, {2.5f});
  Run refused(kTotal);
  EarlyStopping refused_early("accuracy", 3);
  refused.trainer.track_state("early_stopping", refused_early);
  CHECK_THROWS_WITH_AS(apply_checkpoint(refused.trainer, corrupt),
                       doctest::Contains("'stale' is 2.5, expected a count in [0, "), ValueError);
  CHECK(refused.trainer.state().step == 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("Checkpointing: an epoch's checkpoint holds its evaluations; stop_after saves and stops") {
  const auto dir = scratch_dir("epochs");
  const auto path = dir / "ckpt.safetensors";
  {  // One epoch (4 steps) evaluated at its end: the checkpoint has EarlyStopping's update.
    Run run(kBatches);
    EarlyStopping early("accuracy", 3);
    run.trainer.track_state("early_stopping", early);
    PeriodicEvaluation evaluation([] { return Metrics{{"accuracy", 0.75}}; }, 0, true);
    Checkpointing checkpointing(run.trainer, path, 0, true);
    run.trainer.fit(source(), evaluation, early, checkpointing);
    const Checkpoint saved = read_checkpoint(path);
    CHECK(saved.trainer.step == kBatches);
    CHECK(saved.trainer.epoch == 1);
    CHECK(saved.states.at("early_stopping").at("best")(0, 0) == 0.75f);
  }
  std::filesystem::remove(path);
  {  // stop_after 3: stopped and saved at step 3
    Run run(kTotal);
    Checkpointing checkpointing(run.trainer, path, 0, false, 3);
    const TrainResult result = run.trainer.fit(source(), checkpointing);
    CHECK(result.stopped);
    CHECK(result.steps == 3);
    CHECK(read_checkpoint(path).trainer.step == 3);
  }
  {  // ... but not at the run's last step, which ends as usual
    Run run(5);
    Checkpointing checkpointing(run.trainer, dir / "last.safetensors", 0, false, 5);
    const TrainResult result = run.trainer.fit(source(), checkpointing);
    CHECK_FALSE(result.stopped);
    CHECK(result.steps == 5);
    CHECK_FALSE(std::filesystem::exists(dir / "last.safetensors"));
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("checkpoint contents: parameter and optimizer tensors, position metadata") {
  const auto dir = scratch_dir("contents");
  const auto path = dir / "ckpt.safetensors";
  Run run(5);
  run.trainer.fit(source());
  save_checkpoint(path, run.trainer);
  const auto file = io::SafetensorsFile::open(path);
  const std::vector<std::string> names{"optimizer/toy.proj.lora_A.exp_avg",
                                       "optimizer/toy.proj.lora_A.exp_avg_sq",
                                       "optimizer/toy.proj.lora_B.exp_avg",
                                       "optimizer/toy.proj.lora_B.exp_avg_sq",
                                       "param/toy.proj.lora_A",
                                       "param/toy.proj.lora_B"};
  CHECK(file.names() == names);
  CHECK(file.load("param/toy.proj.lora_B").values() == HostMatrix(run.model.adapter().lora_B()).values());
  const Checkpoint back = read_checkpoint(path);
  CHECK(back.trainer.seed == 3);
  CHECK(back.trainer.step == 5);
  CHECK(back.trainer.epoch == 1);
  CHECK(back.trainer.batch_in_epoch == 1);
  CHECK(back.optimizer.step == 5);
  // 5 forwards of 4 rows x 6 inputs, one dropout draw per element.
  CHECK(back.streams.at("toy.proj.dropout").offset() == 5 * 4 * 6);
  std::filesystem::remove_all(dir);
}

TEST_CASE("a failed or interrupted write leaves the previous checkpoint loadable") {
  const auto dir = scratch_dir("atomic");
  const auto path = dir / "ckpt.safetensors";
  Run run(7);
  Checkpointing checkpointing(run.trainer, path, 3);
  // The writer's temporary is "<path>.tmp-<pid>"; a directory in its place
  // makes the write at step 6 fail after the one at step 3 succeeded.
  struct BlockTemp {
    std::filesystem::path temp;
    void on_step_end(TrainContext&, float, Index step) {
      if (step == 4) std::filesystem::create_directory(temp);
    }
  } block{path.string() + ".tmp-" + std::to_string(::getpid())};
  CHECK_THROWS_AS(run.trainer.fit(source(), block, checkpointing), IoError);
  CHECK(run.trainer.state().step == 6);
  CHECK(read_checkpoint(path).trainer.step == 3);
  std::filesystem::remove(block.temp);

  // A stale temporary of a crashed writer (another pid) is ignored by readers.
  std::ofstream(path.string() + ".tmp-1") << "half a checkpoint";
  Run resumed(kTotal);
  load_checkpoint(path, resumed.trainer);
  CHECK(resumed.trainer.state().step == 3);
  save_checkpoint(path, resumed.trainer);
  CHECK(read_checkpoint(path).trainer.step == 3);
  std::filesystem::remove_all(dir);
}

TEST_CASE("checkpoints of another run, model or format are refused before anything changes") {
  const auto dir = scratch_dir("mismatch");
  const auto path = dir / "ckpt.safetensors";
  Run run(4);
  run.trainer.fit(source());
  save_checkpoint(path, run.trainer);

  Run other_seed(kTotal, 99);
  CHECK_THROWS_WITH_AS(load_checkpoint(path, other_seed.trainer), doctest::Contains("seed"), ValueError);

  // Settings: each difference named, in either direction, before anything changes.
  const auto with_settings = [&](std::map<std::string, std::string> settings) {
    Run saved(4);
    TrainerConfig config = saved.trainer.config();
    config.settings = std::move(settings);
    return config;
  };
  {
    Run a(4), b(kTotal);
    Trainer saving(a.model, a.adamw, with_settings({{"lr", "0.05"}, {"epochs", "10"}}));
    saving.track_stream("toy.proj.dropout", a.model.adapter().dropout_stream());
    saving.fit(source());
    save_checkpoint(dir / "settings.safetensors", saving);
    CHECK(read_checkpoint(dir / "settings.safetensors").trainer.settings.at("lr") == "0.05");
    const auto refused = [&](std::map<std::string, std::string> settings, const char* message) {
      Trainer resuming(b.model, b.adamw, with_settings(std::move(settings)));
      resuming.track_stream("toy.proj.dropout", b.model.adapter().dropout_stream());
      const HostMatrix lora_a(b.model.adapter().lora_A());
      CHECK_THROWS_WITH_AS(load_checkpoint(dir / "settings.safetensors", resuming), doctest::Contains(message),
                           ValueError);
      CHECK(HostMatrix(b.model.adapter().lora_A()).values() == lora_a.values());
      CHECK(resuming.state().step == 0);
    };
    refused({{"lr", "0.05"}, {"epochs", "20"}}, "cannot resume a run of epochs 10 under epochs 20");
    refused({{"lr", "0.05"}}, "the saved run has setting epochs 10, which this run lacks");
    refused({{"lr", "0.05"}, {"epochs", "10"}, {"batch", "4"}}, "the saved run has no setting batch (this run: 4)");
    CHECK_THROWS_WITH_AS(load_checkpoint(path, saving), doctest::Contains("the saved run has no setting"),
                         ValueError);  // saved without settings
    Trainer same(b.model, b.adamw, with_settings({{"epochs", "10"}, {"lr", "0.05"}}));
    same.track_stream("toy.proj.dropout", b.model.adapter().dropout_stream());
    load_checkpoint(dir / "settings.safetensors", same);
    CHECK(same.state().step == 4);
  }

  // A rank-3 adapter: lora_A is 3 x 6, not 2 x 6.
  ToyModel wide(1, 3, 0.25f);
  AdamW<cpu> adamw;
  Trainer wide_trainer(wide, adamw, {.epochs = 1, .seed = 3});
  const HostMatrix before(wide.adapter().lora_A());
  CHECK_THROWS_WITH_AS(load_checkpoint(path, wide_trainer), doctest::Contains("toy.proj.lora_A"), ShapeError);
  CHECK(HostMatrix(wide.adapter().lora_A()).values() == before.values());
  CHECK(wide_trainer.state().step == 0);

  Run untracked(kTotal);
  Trainer plain(untracked.model, untracked.adamw, {.epochs = 1, .seed = 3});
  plain.track_stream("some.other.stream", untracked.model.adapter().dropout_stream());
  CHECK_THROWS_WITH_AS(load_checkpoint(path, plain), doctest::Contains("some.other.stream"), ValueError);

  // A stream the checkpoint holds but the run does not track would restart at 0.
  Run fresh(kTotal);
  Trainer untracking(fresh.model, fresh.adamw, {.epochs = 1, .seed = 3});
  CHECK_THROWS_WITH_AS(load_checkpoint(path, untracking),
                       doctest::Contains("holds 1 random streams but the run tracks 0"), ValueError);

  // Another optimizer's state, or a position no run reaches: refused with the
  // model, the optimizer and the trainer as they were.
  const auto unchanged = [&](auto& trainer, const auto& load, const char* message) {
    const HostMatrix lora_a(fresh.model.adapter().lora_A());
    const Index optimizer_step = trainer.optimizer().step_count();
    CHECK_THROWS_WITH_AS(load(trainer), doctest::Contains(message), ValueError);
    CHECK(HostMatrix(fresh.model.adapter().lora_A()).values() == lora_a.values());
    CHECK(trainer.optimizer().step_count() == optimizer_step);
    CHECK(trainer.state().step == 0);
  };
  Sgd<cpu> sgd({.lr = 0.1});
  Trainer sgd_trainer(fresh.model, sgd, {.epochs = 1, .seed = 3});
  sgd_trainer.track_stream("toy.proj.dropout", fresh.model.adapter().dropout_stream());
  unchanged(sgd_trainer, [&](auto& t) { load_checkpoint(path, t); }, "Sgd: the state to import was kept by 'AdamW'");
  Checkpoint backwards = read_checkpoint(path);
  backwards.trainer.epoch = -1;
  unchanged(fresh.trainer, [&](auto& t) { apply_checkpoint(t, backwards); }, "negative position");
  Checkpoint stepped = read_checkpoint(path);
  ++stepped.optimizer.step;  // moments of a run one update further: the bias corrections would be off
  unchanged(fresh.trainer, [&](auto& t) { apply_checkpoint(t, stepped); },
            "its optimizer has taken 5 steps and its trainer 4, but this run's optimizer is 0 steps ahead");
  Checkpoint overfull = read_checkpoint(path);
  overfull.trainer.window_steps = overfull.trainer.step + 1;  // would skew every logged mean after the resume
  unchanged(fresh.trainer, [&](auto& t) { apply_checkpoint(t, overfull); }, "the logged loss window holds");

  // Edited metadata: positions are whole numbers (a float is refused, not
  // converted), settings are strings.
  const auto edited = [&](const char* key, const nlohmann::json& value) {
    const auto file = io::SafetensorsFile::open(path);
    auto meta = nlohmann::json::parse(file.metadata().at("plora.checkpoint"));
    meta[key] = value;
    io::SafetensorsWriter writer;
    for (const auto& name : file.names()) writer.add(name, file.load(name));
    writer.set_metadata("plora.checkpoint", meta.dump());
    const auto edited_path = dir / (std::string(key) + ".safetensors");
    writer.write(edited_path);
    return edited_path;
  };
  CHECK_THROWS_WITH_AS(read_checkpoint(edited("epoch", 1e30)),
                       doctest::Contains("metadata 'epoch' is 1e+30, expected an integer in [0, "), IoError);
  CHECK_THROWS_WITH_AS(read_checkpoint(edited("settings", {{"lr", 0.05}})),
                       doctest::Contains("setting 'lr' is 0.05, expected a string"), IoError);
  CHECK_THROWS_WITH_AS(read_checkpoint(edited("settings", {"lr"})),
                       doctest::Contains("metadata 'settings' is not an object"), IoError);

  // Values no run of the guard writes: a NaN parameter, a negative second moment.
  const auto with_value = [&](const std::string& tensor, float value) {
    const auto file = io::SafetensorsFile::open(path);
    io::SafetensorsWriter writer;
    for (const auto& name : file.names()) {
      HostMatrix loaded = file.load(name);
      if (name == tensor) loaded.values()[1] = value;
      writer.add(name, loaded);
    }
    writer.set_metadata("plora.checkpoint", file.metadata().at("plora.checkpoint"));
    writer.write(dir / "edited_value.safetensors");
    return dir / "edited_value.safetensors";
  };
  CHECK_THROWS_WITH_AS(read_checkpoint(with_value("param/toy.proj.lora_A", std::nanf(""))),
                       doctest::Contains("tensor 'param/toy.proj.lora_A': entry 1 (row 0) is nan"), NumericError);
  CHECK_THROWS_WITH_AS(read_checkpoint(with_value("optimizer/toy.proj.lora_A.exp_avg", INFINITY)),
                       doctest::Contains("entry 1 (row 0) is inf"), NumericError);
  unchanged(fresh.trainer, [&](auto& t) { load_checkpoint(with_value("optimizer/toy.proj.lora_A.exp_avg_sq", -1.0f), t); },
            "AdamW: second moment 'toy.proj.lora_A.exp_avg_sq' holds -1 at element 1 (must be >= 0)");

  io::SafetensorsWriter foreign;
  foreign.add("weight", HostMatrix(2, 2));
  foreign.write(dir / "foreign.safetensors");
  CHECK_THROWS_WITH_AS(read_checkpoint(dir / "foreign.safetensors"), doctest::Contains("not a plora checkpoint"),
                       IoError);
  CHECK_THROWS_AS(read_checkpoint(dir / "missing.safetensors"), IoError);
  std::filesystem::remove_all(dir);
}
