#pragma once
// What the runners' built-in demos share. No pretrained checkpoint can be
// downloaded, so each demo first pretrains a small model on a source task:
// every linear site trains a FullDelta adapter and the head is trained in full
// (pretrain_every_site), then the deltas are merged and the model is saved as
// a Hugging Face checkpoint directory, model.safetensors with Hub key names
// (save_hub_weights) next to the demo's own config files. The directory is
// cached (cached_demo_checkpoint): a later run reuses it when its pretrain.json
// records the same settings. The demos (vit_runner/digits_demo.hpp,
// deberta_runner/licenses_demo.hpp) supply the model, the data and the key.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/pipeline.hpp"
#include "common/report.hpp"
#include "plora/adapters/full_delta.hpp"
#include "plora/core/error.hpp"
#include "plora/core/rng.hpp"
#include "plora/io/datasets.hpp"
#include "plora/io/safetensors.hpp"
#include "plora/models/sites.hpp"
#include "plora/nn/trainable_linear.hpp"
#include "plora/sparsity/evaluate.hpp"
#include "plora/train/adamw.hpp"
#include "plora/train/schedule.hpp"
#include "plora/train/trainer.hpp"

namespace plora::runner {

/// One Hub tensor of a demo checkpoint: its shape as saved and its values.
struct HubTensor {
  std::vector<Index> shape;
  HostMatrix::Values values;
};
/// A demo checkpoint's tensors by Hub key.
using HubTensors = std::map<std::string, HubTensor>;

/// Builds a demo model's initial tensors; each is drawn from its own stream
/// (seed, stream_id(key)), so a tensor does not depend on which were added before.
class HubTensorInit {
 public:
  explicit HubTensorInit(std::uint64_t seed) : seed_(seed) {}

  /// N(0, stddev^2) values, or all `fill` when stddev is 0.
  void add(const std::string& key, std::vector<Index> shape, float stddev, float fill = 0.0f) {
    Index n = 1;
    for (const Index d : shape) n *= d;
    HostMatrix::Values values(static_cast<std::size_t>(n), fill);
    RandomStream rng(seed_, stream_id(key));
    if (stddev > 0.0f)
      for (float& v : values) v = stddev * rng.normal();
    tensors_[key] = {std::move(shape), std::move(values)};
  }
  /// A linear layer as transformers initialises it: weight N(0, 0.02^2)
  /// (initializer_range), zero bias.
  void linear(const std::string& key, Index out_features, Index in_features) {
    add(key + ".weight", {out_features, in_features}, 0.02f);
    add(key + ".bias", {out_features}, 0.0f);
  }
  /// A LayerNorm: weight 1, bias 0.
  void layernorm(const std::string& key, Index features) {
    add(key + ".weight", {features}, 0.0f, 1.0f);
    add(key + ".bias", {features}, 0.0f);
  }
  [[nodiscard]] HubTensors take() && { return std::move(tensors_); }

 private:
  std::uint64_t seed_;
  HubTensors tensors_;
};

/// The (rows x cols) values of `weights`[key], for a model's weight source;
/// ValueError naming `model` and the key when the demo made no such tensor.
inline HostMatrix hub_tensor(const HubTensors& weights, std::string_view model, const std::string& key, Index rows,
                             Index cols) {
  const auto found = weights.find(key);
  check<ValueError>(found != weights.end(), "demo ", model, ": no initial tensor '", key, "'");
  return HostMatrix::adopt(rows, cols, found->second.values);
}

/// config.json's {id2label, label2id} for class names `labels`.
inline std::pair<nlohmann::ordered_json, nlohmann::ordered_json> hub_label_maps(
    const std::vector<std::string>& labels) {
  nlohmann::ordered_json id2label = nlohmann::ordered_json::object(), label2id = nlohmann::ordered_json::object();
  for (std::size_t i = 0; i < labels.size(); ++i) {
    id2label[std::to_string(i)] = labels[i];
    label2id[labels[i]] = i;
  }
  return {std::move(id2label), std::move(label2id)};
}

/// Pretrains a demo's source model: a FullDelta adapter on every linear site
/// and the head in full (AdamW without decay on biases; linear warm-up over
/// the first tenth of the steps, then linear decay), then measures the
/// accuracy on `test` (read in order) and merges the deltas into the weights
/// (W <- W + ΔW). Returns that accuracy.
/// @tparam Model     a plora::Model with FullDelta adapters
/// @tparam Source    its BatchSource
/// @tparam Settings  has epochs, lr, weight_decay and seed
template <class Model, class Source, class Settings>
double pretrain_every_site(Model& model, const Source& train, const Source& test, const Settings& p, bool quiet,
                           std::ostream& log) {
  using B = typename Model::BackendType;
  const std::vector<std::string> every_site = model.site_names();
  attach_adapters(model, std::span<const std::string>(every_site), [&](const std::string& name, Index out, Index in) {
    return FullDelta<B>(out, in, {}, RandomStream(p.seed, stream_id(name)));
  });
  const TrainerConfig trainer_config{.epochs = p.epochs, .seed = p.seed};
  const Index total = planned_steps(trainer_config, train.batches_per_epoch());
  AdamW<B> optimizer(AdamWConfig{.lr = p.lr, .weight_decay = p.weight_decay, .no_decay = {"bias"}});
  Trainer trainer(model, optimizer, trainer_config, LinearWarmupDecay(total / 10, total));
  ConsoleProgress progress(log, quiet);
  in_context<NumericError>("the demo's pretraining (--pretrain-epochs)", [&] { return trainer.fit(train, progress); });
  if (!quiet) log << '\n';

  std::vector<typename Source::Batch> held_out;
  for (Index i = 0; i < test.batches_per_epoch(); ++i) held_out.push_back(test.batch(0, i));
  const double accuracy =
      evaluate_metric(model, std::span<const typename Source::Batch>(held_out), metrics::Metric::Accuracy);
  for (const auto& name : every_site) {
    auto& site = model.site(name);
    site.adapter().merge_into(site.mutable_weight());
  }
  return accuracy;
}

/// Writes `weights` to the safetensors `file` (PyTorch format), first
/// replacing every linear site's weight by the model's (merged) one and each
/// of `heads`' weight and bias by the trained ones.
template <class Model>
void save_hub_weights(const std::filesystem::path& file, HubTensors weights, Model& model,
                      std::initializer_list<TrainableLinear<typename Model::BackendType>*> heads) {
  using B = typename Model::BackendType;
  for (const auto& name : model.site_names())
    weights.at(name + ".weight").values = to_host<B>(model.site(name).weight()).values();
  for (auto* head : heads) {
    weights.at(head->name() + ".weight").values = to_host<B>(head->weight()).values();
    weights.at(head->name() + ".bias").values = to_host<B>(head->bias()).values();
  }
  io::SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  for (const auto& [key, tensor] : weights) writer.add(key, tensor.shape, std::span<const float>(tensor.values));
  writer.write(file);
}

/// How a demo's log lines name its model and source task.
struct DemoNames {
  std::string model;        ///< e.g. "ViT"
  std::string source_task;  ///< e.g. "digits 0-4"
};

/// The demo checkpoint in `dir`: reused when its pretrain.json records `key`
/// and a result, and every one of `files` exists there; otherwise rebuilt by
/// `build()`, which writes the files and returns its result (a JSON object with
/// "source_accuracy"), and stamped with pretrain.json = key + {"result"}.
/// Before a build the stamp holds the key alone: it marks the directory as the
/// demo's (a directory holding any of `files` without a stamp is someone's
/// checkpoint and is refused, never overwritten), and an interrupted build is
/// never reused. Returns the result with "reused" and "dir" added.
template <class Build>
nlohmann::ordered_json cached_demo_checkpoint(const std::filesystem::path& dir, const nlohmann::ordered_json& key,
                                              std::initializer_list<const char*> files, const DemoNames& names,
                                              bool quiet, std::ostream& log, Build&& build) {
  const std::filesystem::path stamp = dir / "pretrain.json";
  const bool stamped = std::filesystem::is_regular_file(stamp);
  for (const char* file : files)
    check<IoError>(stamped || !std::filesystem::exists(dir / file), "'", dir.string(), "' holds ", file,
                   " but no pretrain.json of this demo: not overwriting what may be your checkpoint (give a "
                   "new or empty --pretrained-dir, or pass the checkpoint with --checkpoint)");
  nlohmann::ordered_json result;
  bool reuse = stamped;
  for (const char* file : files) reuse = reuse && std::filesystem::is_regular_file(dir / file);
  if (reuse) {
    nlohmann::ordered_json saved = nlohmann::ordered_json::parse(io::detail::read_file(stamp), nullptr, false);
    reuse = !saved.is_discarded() && saved.is_object() && saved.contains("result") && saved["result"].is_object() &&
            saved["result"].contains("source_accuracy") && saved["result"]["source_accuracy"].is_number();
    if (reuse) {
      result = saved["result"];
      saved.erase("result");
      reuse = saved == key;
    }
  }
  if (reuse) {
    if (!quiet) log << "reusing the pretrained demo " << names.model << " in " << dir.string() << '\n';
  } else {
    check<ValueError>(!std::filesystem::exists(dir) || std::filesystem::is_directory(dir),
                      "the demo's pretrained model directory (--pretrained-dir) '", dir.string(), "' is not a directory");
    std::filesystem::create_directories(dir);
    write_json(stamp, key);  // the demo's directory from now on; no result, so never reused as it is
    result = build();
    nlohmann::ordered_json new_stamp = key;
    new_stamp["result"] = result;
    write_json(stamp, new_stamp);
  }
  result["reused"] = reuse;
  result["dir"] = dir.string();
  if (!quiet)
    log << "source task (" << names.source_task << ") accuracy of the pretrained " << names.model << ": "
        << format_number(result["source_accuracy"].get<double>()) << '\n';
  return result;
}

}  // namespace plora::runner
