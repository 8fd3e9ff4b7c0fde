#pragma once
// The ViT runner's Task (common/pipeline.hpp): a Hugging Face ViT checkpoint
// directory and an image dataset already split into train and test.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "plora/core/digest.hpp"
#include "plora/core/error.hpp"
#include "plora/io/datasets.hpp"
#include "plora/io/safetensors.hpp"
#include "plora/io/vit_checkpoint.hpp"
#include "plora/models/vit.hpp"
#include "plora/train/metrics.hpp"

namespace plora::runner {

/// @tparam B  backend the models run on
template <Backend B>
class VitTask {
 public:
  template <Adapter A>
  using Model = Vit<B, A>;
  using Source = io::ImageBatches;

  /// @param config     the checkpoint's config with num_labels = the dataset's classes
  /// @param keep_head  reuse the checkpoint's classifier, which must have num_labels rows;
  ///                   otherwise every model gets a new N(0, 0.02) head drawn from `seed`
  /// @param data       describes the dataset in the report
  VitTask(std::filesystem::path checkpoint, ViTConfig config, io::ImageDataset train, io::ImageDataset test,
          Index batch, std::uint64_t seed, bool keep_head, nlohmann::ordered_json data)
      : checkpoint_(std::move(checkpoint)),
        weights_(io::SafetensorsFile::open(plora::detail::vit_weights_file(checkpoint_))),
        config_(std::move(config)), train_data_(std::move(train)), test_data_(std::move(test)), batch_(batch),
        seed_(seed), keep_head_(keep_head), data_(std::move(data)),
        train_(train_data_, batch, seed, io::ImageBatches::Order::Shuffled),
        test_(test_data_, batch, seed, io::ImageBatches::Order::Sequential) {
    io::check_no_layers_beyond(weights_, config_.num_hidden_layers,
                               plora::detail::vit_weights_file(checkpoint_).string());
    weights_digest_ = weights_.content_digest();
    Digest data_digest;
    io::add_to(io::add_to(data_digest, train_data_), test_data_);
    data_digest_ = data_digest.hex();
    // Asked to keep a head that cannot serve the dataset: say so rather than train a new one unasked.
    if (keep_head_ && !vit_head_matches(weights_, config_.num_labels)) {
      const auto shape_of = [&](const std::string& key) {
        return weights_.contains(key) ? io::detail::shape_string(weights_.info(key).shape) : std::string("missing");
      };
      throw ValueError(plora::detail::concat(
          "--keep-head: checkpoint '", checkpoint_.string(), "' has no classifier for the dataset's ",
          config_.num_labels, " classes (classifier.weight ", shape_of("classifier.weight"), ", classifier.bias ",
          shape_of("classifier.bias"), "); leave out --keep-head for a new classifier"));
    }
  }
  VitTask(const VitTask&) = delete;  // the batch sources point into the datasets
  VitTask& operator=(const VitTask&) = delete;

  template <Adapter A>
  Vit<B, A> load_model() {
    // --keep-head was checked against the dataset's classes when the task was built.
    const WeightSource file = vit_weight_source(weights_, keep_head_ ? Head::FromCheckpoint : Head::New);
    base_parameters_ = 0;
    return in_context<ValueError>("checkpoint '" + checkpoint_.string() + "'", [&] {
      return Vit<B, A>(
          config_,
          [&](const std::string& key, Index rows, Index cols) {
            base_parameters_ += rows * cols;
            return file(key, rows, cols);
          },
          seed_);
    });
  }

  [[nodiscard]] const Source& train() const { return train_; }
  [[nodiscard]] const Source& test() const { return test_; }
  /// k training examples per class (seeded), rebuilt when (k, seed) changes.
  const Source& few_shot(Index per_class, std::uint64_t seed) {
    if (!few_shot_ || few_shot_key_ != std::pair{per_class, seed}) {
      few_shot_.reset();
      few_shot_data_ = io::few_shot(train_data_, per_class, seed);
      few_shot_.emplace(few_shot_data_, batch_, seed, io::ImageBatches::Order::Shuffled);
      few_shot_key_ = {per_class, seed};
    }
    return *few_shot_;
  }
  [[nodiscard]] metrics::Metric metric() const { return metrics::Metric::Accuracy; }
  [[nodiscard]] std::vector<std::string> head_prefixes() const { return {"classifier"}; }
  [[nodiscard]] Index base_parameters() const { return base_parameters_; }
  [[nodiscard]] std::string checkpoint() const { return checkpoint_.string(); }

  [[nodiscard]] nlohmann::ordered_json describe() const {
    const ViTConfig& c = config_;
    nlohmann::ordered_json data = data_;
    data["train_examples"] = train_data_.size();
    data["test_examples"] = test_data_.size();
    data["classes"] = train_data_.class_names;
    data["digest"] = data_digest_;
    return {{"checkpoint", checkpoint_.string()},
            {"model",
             {{"type", "vit"},
              {"hidden_size", c.hidden_size},
              {"num_hidden_layers", c.num_hidden_layers},
              {"num_attention_heads", c.num_attention_heads},
              {"intermediate_size", c.intermediate_size},
              {"image_size", c.image_size},
              {"patch_size", c.patch_size},
              {"num_channels", c.num_channels},
              {"num_labels", c.num_labels},
              {"head", keep_head_ ? "checkpoint's when it fits, else new" : "new"},
              {"weights_digest", weights_digest_}}},
            {"dataset", std::move(data)}};
  }

 private:
  std::filesystem::path checkpoint_;
  io::SafetensorsFile weights_;
  ViTConfig config_;
  io::ImageDataset train_data_, test_data_, few_shot_data_;
  Index batch_;
  std::uint64_t seed_;
  bool keep_head_;
  nlohmann::ordered_json data_;
  Source train_, test_;
  std::optional<Source> few_shot_;
  std::pair<Index, std::uint64_t> few_shot_key_{};
  Index base_parameters_ = 0;
  std::string weights_digest_, data_digest_;  // what the checkpoint and the examples hold (Digest)
};

}  // namespace plora::runner
