#pragma once
// Training checkpoints: every trainable parameter by name, the optimizer state,
// the trainer's position (seed, epoch, batch in epoch, step) and the offsets of
// tracked random streams, in one safetensors file:
//
//   tensors   "param/<name>"      parameter values
//             "optimizer/<key>"   optimizer buffers ("<param>.exp_avg", ...)
//             "state/<name>/<key>" tensors of tracked states (Trainer::track_state)
//   metadata  "plora.checkpoint"  JSON {format, version, seed, settings,
//                                 epoch, batch_in_epoch, step, window_loss,
//                                 window_steps, optimizer, optimizer_step,
//                                 streams: {name: {seed, stream, offset}}}
//
// Files are written to a temporary and renamed over the target, so a crash
// mid-write leaves the previous checkpoint intact. Needs plora::io.
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/core/host_matrix.hpp"
#include "plora/core/rng.hpp"
#include "plora/io/safetensors.hpp"
#include "plora/train/callbacks.hpp"
#include "plora/train/optimizer_concepts.hpp"
#include "plora/train/trainer.hpp"

namespace plora {

/// A checkpoint in host memory.
struct Checkpoint {
  std::map<std::string, HostMatrix> parameters;
  OptimizerState optimizer;
  TrainerState trainer;
  std::map<std::string, RandomStream> streams;
  std::map<std::string, StateTensors> states;
};

namespace detail {
inline constexpr std::string_view kCheckpointKey = "plora.checkpoint";
inline constexpr std::string_view kParamPrefix = "param/";
inline constexpr std::string_view kOptimizerPrefix = "optimizer/";
inline constexpr std::string_view kStatePrefix = "state/";
inline constexpr int kCheckpointVersion = 3;  // 2: names the optimizer, keeps the loss window; 3: settings
}  // namespace detail

inline void write_checkpoint(const std::filesystem::path& path, const Checkpoint& checkpoint) {
  io::SafetensorsWriter writer;
  for (const auto& [name, value] : checkpoint.parameters) writer.add(std::string(detail::kParamPrefix) + name, value);
  for (const auto& [key, value] : checkpoint.optimizer.tensors)
    writer.add(std::string(detail::kOptimizerPrefix) + key, value);
  for (const auto& [name, tensors] : checkpoint.states)
    for (const auto& [key, value] : tensors) writer.add(std::string(detail::kStatePrefix) + name + "/" + key, value);
  nlohmann::json meta = {{"format", "plora-checkpoint"},
                         {"version", detail::kCheckpointVersion},
                         {"seed", checkpoint.trainer.seed},
                         {"settings", checkpoint.trainer.settings},
                         {"epoch", checkpoint.trainer.epoch},
                         {"batch_in_epoch", checkpoint.trainer.batch_in_epoch},
                         {"step", checkpoint.trainer.step},
                         {"window_loss", checkpoint.trainer.window_loss},
                         {"window_steps", checkpoint.trainer.window_steps},
                         {"optimizer", checkpoint.optimizer.optimizer},
                         {"optimizer_step", checkpoint.optimizer.step},
                         {"streams", nlohmann::json::object()}};
  for (const auto& [name, stream] : checkpoint.streams)
    meta["streams"][name] = {{"seed", stream.seed()}, {"stream", stream.stream()}, {"offset", stream.offset()}};
  writer.set_metadata(std::string(detail::kCheckpointKey), meta.dump());
  writer.write(path);
}

inline Checkpoint read_checkpoint(const std::filesystem::path& path) {
  const auto file = io::SafetensorsFile::open(path);
  const auto where = "checkpoint '" + path.string() + "'";
  const auto entry = file.metadata().find(std::string(detail::kCheckpointKey));
  check<IoError>(entry != file.metadata().end(), where, ": no '", detail::kCheckpointKey,
                 "' metadata (not a plora checkpoint)");
  Checkpoint checkpoint;
  try {
    const auto meta = nlohmann::json::parse(entry->second);
    check<IoError>(meta.at("format") == "plora-checkpoint" && meta.at("version") == detail::kCheckpointVersion, where,
                   ": unsupported format ", meta.at("format").dump(), " version ", meta.at("version").dump());
    // Counts and positions are whole numbers >= 0: a float or a negative
    // value is refused here rather than converted.
    const auto count = [&]<class T>(const nlohmann::json& object, const char* key, T) {
      const auto& value = object.at(key);
      check<IoError>(value.is_number_unsigned() && value.get<std::uint64_t>() <= std::uint64_t(std::numeric_limits<T>::max()),
                     where, ": metadata '", key, "' is ", value.dump(), ", expected an integer in [0, ",
                     std::numeric_limits<T>::max(), "]");
      return value.get<T>();
    };
    checkpoint.trainer = {.seed = count(meta, "seed", std::uint64_t{}),
                          .epoch = count(meta, "epoch", Index{}),
                          .batch_in_epoch = count(meta, "batch_in_epoch", Index{}),
                          .step = count(meta, "step", Index{}),
                          .window_loss = meta.at("window_loss").get<double>(),
                          .window_steps = count(meta, "window_steps", Index{})};
    check<IoError>(meta.at("settings").is_object(), where, ": metadata 'settings' is not an object");
    for (const auto& [name, value] : meta.at("settings").items()) {
      check<IoError>(value.is_string(), where, ": setting '", name, "' is ", value.dump(), ", expected a string");
      checkpoint.trainer.settings.emplace(name, value.get<std::string>());
    }
    checkpoint.optimizer.optimizer = meta.at("optimizer").get<std::string>();
    checkpoint.optimizer.step = count(meta, "optimizer_step", Index{});
    for (const auto& [name, s] : meta.at("streams").items())
      checkpoint.streams.emplace(name, RandomStream(count(s, "seed", std::uint64_t{}), count(s, "stream", std::uint64_t{}),
                                                    count(s, "offset", std::uint64_t{})));
  } catch (const nlohmann::json::exception& error) {
    throw IoError(plora::detail::concat(where, ": malformed metadata: ", error.what()));
  }
  // Parameters, optimizer buffers and tracked states are finite in any run the guard let through.
  for (const auto& name : file.names()) {
    if (name.starts_with(detail::kParamPrefix)) {
      checkpoint.parameters.emplace(name.substr(detail::kParamPrefix.size()), file.load_finite(name));
    } else if (name.starts_with(detail::kOptimizerPrefix)) {
      checkpoint.optimizer.tensors.emplace(name.substr(detail::kOptimizerPrefix.size()), file.load_finite(name));
    } else if (const std::size_t slash = name.find('/', detail::kStatePrefix.size());
               name.starts_with(detail::kStatePrefix) && slash != std::string::npos) {
      const std::string state = name.substr(detail::kStatePrefix.size(), slash - detail::kStatePrefix.size());
      checkpoint.states[state].emplace(name.substr(slash + 1), file.load_finite(name));
    } else {
      throw IoError(plora::detail::concat(where, ": unexpected tensor '", name, "'"));
    }
  }
  return checkpoint;
}

/// The checkpoint of a trainer's model parameters, optimizer, position and
/// tracked streams.
/// @tparam T  a Trainer
template <class T>
Checkpoint make_checkpoint(const T& trainer) {
  using B = typename T::BackendType;
  Checkpoint checkpoint;
  for (const auto& param : trainer.model().parameters())
    checkpoint.parameters.emplace(param.name, to_host<B>(param.value));
  checkpoint.optimizer = trainer.optimizer().export_state();
  checkpoint.trainer = trainer.state();
  for (const auto& [name, stream] : trainer.tracked_streams()) checkpoint.streams.emplace(name, *stream);
  for (const auto& [name, state] : trainer.tracked_states()) checkpoint.states.emplace(name, state.export_state());
  return checkpoint;
}

/// Loads `checkpoint` into the trainer's model, optimizer, position, tracked
/// streams and states. Everything is checked before anything is changed: every
/// model parameter, optimizer buffer, tracked stream and state must be present
/// and match, the optimizer's step count must be as far from the trainer's as
/// in this run, and the checkpoint must hold nothing the run lacks.
template <class T>
void apply_checkpoint(T& trainer, const Checkpoint& checkpoint) {
  using B = typename T::BackendType;
  auto params = trainer.model().parameters();
  trainer.check_restorable(checkpoint.trainer);  // another run's seed or settings: say so before any shape differs
  // The trainer steps its optimizer once per step, so the two counts keep the
  // distance they started at; another distance means optimizer state of
  // another run, whose AdamW bias corrections would be off.
  const Index ahead = trainer.optimizer().step_count() - trainer.state().step;
  check<ValueError>(checkpoint.optimizer.step - checkpoint.trainer.step == ahead,
                    "checkpoint: its optimizer has taken ", checkpoint.optimizer.step, " steps and its trainer ",
                    checkpoint.trainer.step, ", but this run's optimizer is ", ahead,
                    " steps ahead of its trainer (optimizer state of another run?)");
  for (const auto& param : params) {
    const auto it = checkpoint.parameters.find(param.name);
    check<ValueError>(it != checkpoint.parameters.end(), "checkpoint: no value for parameter '", param.name, "'");
    require_shape(it->second.view(), param.value.rows, param.value.cols, "checkpoint parameter '" + param.name + "'");
  }
  check<ValueError>(checkpoint.parameters.size() == params.size(), "checkpoint: holds ", checkpoint.parameters.size(),
                    " parameters but the model has ", params.size(), " (another adapter configuration?)");
  for (const auto& [name, stream] : trainer.tracked_streams()) {
    const auto it = checkpoint.streams.find(name);
    check<ValueError>(it != checkpoint.streams.end(), "checkpoint: no offset for random stream '", name, "'");
    check<ValueError>(it->second.seed() == stream->seed() && it->second.stream() == stream->stream(),
                      "checkpoint: random stream '", name, "' has another seed or stream id");
  }
  check<ValueError>(checkpoint.streams.size() == trainer.tracked_streams().size(), "checkpoint: holds ",
                    checkpoint.streams.size(), " random streams but the run tracks ", trainer.tracked_streams().size(),
                    " (a stream left untracked would not resume where it stopped)");
  for (const auto& [name, state] : trainer.tracked_states()) {
    const auto it = checkpoint.states.find(name);
    check<ValueError>(it != checkpoint.states.end(), "checkpoint: no state of '", name, "'");
    state.check_state(it->second);
  }
  check<ValueError>(checkpoint.states.size() == trainer.tracked_states().size(), "checkpoint: holds the state of ",
                    checkpoint.states.size(), " objects but the run tracks ", trainer.tracked_states().size());

  // The optimizer checks its buffers against the parameters before it changes.
  trainer.optimizer().import_state(checkpoint.optimizer, params);
  for (auto& param : params) B::upload(param.value, checkpoint.parameters.at(param.name).view());
  for (const auto& [name, stream] : trainer.tracked_streams()) stream->set_offset(checkpoint.streams.at(name).offset());
  for (const auto& [name, state] : trainer.tracked_states()) state.import_state(checkpoint.states.at(name));
  trainer.restore(checkpoint.trainer);
}

template <class T>
void save_checkpoint(const std::filesystem::path& path, const T& trainer) {
  write_checkpoint(path, make_checkpoint(trainer));
}

template <class T>
void load_checkpoint(const std::filesystem::path& path, T& trainer) {
  apply_checkpoint(trainer, read_checkpoint(path));
}

/// Callback: saves a checkpoint of `trainer` to `path` (replacing the previous
/// one atomically) every `every_steps` steps and, if asked, after every epoch
/// end together with the evaluations it reported (saved when the next epoch
/// begins or training ends, so that the tracked states the evaluations change,
/// such as EarlyStopping's, are in it). With `stop_after`, it saves and stops
/// the run at that step, unless that is the run's last step.
/// @tparam T  a Trainer
template <class T>
class Checkpointing {
 public:
  Checkpointing(const T& trainer, std::filesystem::path path, Index every_steps, bool each_epoch = false,
                std::optional<Index> stop_after = std::nullopt)
      : trainer_(&trainer),
        path_(std::move(path)),
        every_steps_(every_steps),
        each_epoch_(each_epoch),
        stop_after_(stop_after) {
    check<ValueError>(every_steps >= 0, "Checkpointing: every_steps ", every_steps, " is negative");
    check<ValueError>(!stop_after || *stop_after >= 1, "Checkpointing: stop_after ", stop_after.value_or(0),
                      " must be at least 1");
  }

  bool on_step_end(TrainContext& ctx, float, Index step) {
    const bool stop = stop_after_ && step >= *stop_after_ && step < ctx.total_steps;
    if (stop || (every_steps_ > 0 && step % every_steps_ == 0)) save_checkpoint(path_, *trainer_);
    return stop;
  }
  void on_epoch_end(TrainContext&) { epoch_ended_ = each_epoch_; }
  void on_epoch_begin(TrainContext&) { save_ended_epoch(); }
  void on_train_end(TrainContext&) { save_ended_epoch(); }

 private:
  void save_ended_epoch() {
    if (std::exchange(epoch_ended_, false)) save_checkpoint(path_, *trainer_);
  }

  const T* trainer_;
  std::filesystem::path path_;
  Index every_steps_;
  bool each_epoch_;
  std::optional<Index> stop_after_;
  bool epoch_ended_ = false;  // an epoch ended and its checkpoint is not yet written
};

}  // namespace plora
