#pragma once
// The DeBERTa runner's Task (common/pipeline.hpp): a Hugging Face DeBERTa-v2/v3
// checkpoint directory (model.safetensors + config.json + spm.model) and a
// labelled text task (GLUE / SuperGLUE, or the built-in demo's) already split
// into train and test.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "plora/core/digest.hpp"
#include "plora/core/error.hpp"
#include "plora/core/rng.hpp"
#include "plora/io/checkpoint_layers.hpp"
#include "plora/io/datasets.hpp"
#include "plora/io/deberta_checkpoint.hpp"
#include "plora/io/glue.hpp"
#include "plora/io/safetensors.hpp"
#include "plora/io/tokenizer.hpp"
#include "plora/models/deberta_v2.hpp"
#include "plora/train/metrics.hpp"

namespace plora::runner {

/// A labelled text task: what its examples mean, and the examples.
struct TextTask {
  std::string name;                 ///< "sst2", ..., or "licenses" (the demo)
  bool pair = false;                ///< examples are text pairs (a, b)
  std::vector<std::string> labels;  ///< class names; empty for a regression (STS-B)
  metrics::Metric metric = metrics::Metric::Accuracy;
  std::vector<TextExample> train, test;
  nlohmann::ordered_json data;  ///< describes the data in the report
  [[nodiscard]] bool regression() const { return labels.empty(); }
  [[nodiscard]] Index num_labels() const { return regression() ? 1 : static_cast<Index>(labels.size()); }
};

/// A seeded random subset of at most `limit` examples, in their order; all when limit is 0.
inline std::vector<TextExample> limited(std::vector<TextExample> examples, Index limit) {
  if (limit <= 0 || limit >= static_cast<Index>(examples.size())) return examples;
  std::vector<Index> order(examples.size());
  std::iota(order.begin(), order.end(), Index{0});
  RandomStream rng(0, stream_id("deberta_runner.limit"));
  io::detail::shuffle(order, rng);
  order.resize(static_cast<std::size_t>(limit));
  std::sort(order.begin(), order.end());
  std::vector<TextExample> out;
  for (const Index i : order) out.push_back(std::move(examples[static_cast<std::size_t>(i)]));
  return out;
}

/// k examples per class drawn from `seed` (regression: per unit bin of the
/// target, [0, 1), ..., [4, 5], STS-B's scale), in dataset order. A class with
/// fewer than k examples gives all it has.
inline std::vector<TextExample> few_shot_examples(const std::vector<TextExample>& examples, bool regression,
                                                  Index per_class, std::uint64_t seed) {
  check<ValueError>(per_class >= 1, "few-shot: examples per class must be >= 1, got ", per_class);
  std::map<std::int32_t, std::vector<Index>> by_class;
  for (Index i = 0; i < static_cast<Index>(examples.size()); ++i) {
    const TextExample& e = examples[static_cast<std::size_t>(i)];
    const auto bin = regression ? static_cast<std::int32_t>(std::clamp(std::floor(e.target), 0.0f, 4.0f)) : e.label;
    by_class[bin].push_back(i);
  }
  std::vector<Index> chosen;
  for (auto& [label, members] : by_class) {
    RandomStream rng(seed, stream_id("deberta_runner.few_shot") + static_cast<std::uint64_t>(label));
    io::detail::shuffle(members, rng);
    members.resize(std::min(members.size(), static_cast<std::size_t>(per_class)));
    chosen.insert(chosen.end(), members.begin(), members.end());
  }
  std::sort(chosen.begin(), chosen.end());
  std::vector<TextExample> out;
  for (const Index i : chosen) out.push_back(examples[static_cast<std::size_t>(i)]);
  return out;
}

/// @tparam B  backend the models run on
template <Backend B>
class DebertaTask {
 public:
  template <Adapter A>
  using Model = DebertaV2<B, A>;
  using Source = TokenBatches;

  /// @param config  the checkpoint's config; num_labels and problem_type are set from the task
  /// @param seed    draws every model's new classifier (and the pooler when the checkpoint has none)
  DebertaTask(std::filesystem::path checkpoint, DebertaV2Config config, TextTask task, Index batch,
              Index max_length, std::uint64_t seed)
      : checkpoint_(std::move(checkpoint)),
        weights_(io::SafetensorsFile::open(checkpoint_ / "model.safetensors")),
        tokenizer_(DebertaV2Tokenizer::from_pretrained(checkpoint_)),
        config_(std::move(config)),
        task_(std::move(task)),
        batch_(batch),
        max_length_(max_length),
        seed_(seed),
        train_(tokenizer_, task_.train, task_.pair, batch, max_length, true, seed),
        test_(tokenizer_, task_.test, task_.pair, batch, max_length, false, seed) {
    config_.num_labels = task_.num_labels();
    config_.problem_type = task_.regression() ? "regression" : "";
    check<ValueError>(tokenizer_.vocab_size() <= config_.vocab_size, "checkpoint '", checkpoint_.string(),
                      "': spm.model has ", tokenizer_.vocab_size(), " pieces but config.json's vocab_size is ",
                      config_.vocab_size, " (tokenizer and model from different checkpoints?)");
    check<ValueError>(max_length <= config_.max_position_embeddings, "--max-length ", max_length,
                      " exceeds the checkpoint's max_position_embeddings ", config_.max_position_embeddings);
    if (!task_.regression()) {  // one class teaches nothing and makes every extracted ratio trivially pass
      std::set<std::int32_t> seen;
      for (const auto& e : task_.train) seen.insert(e.label);
      check<ValueError>(seen.size() >= 2, "task ", task_.name, ": the training set holds ",
                        seen.empty() ? std::string("no examples") : "only label " + task_.labels.at(std::size_t(*seen.begin())),
                        "; a classifier needs examples of at least 2 classes");
    }
    io::check_no_layers_beyond(weights_, config_.num_hidden_layers,
                               (checkpoint_ / "model.safetensors").string());
    // The tokenizer shapes every batch as the weights shape every output: one digest for both.
    weights_digest_ = Digest()
                          .add(weights_.content_digest())
                          .add(io::detail::read_file(checkpoint_ / "spm.model", "tokenizer model"))
                          .hex();
    Digest data_digest;
    add_to(add_to(data_digest, task_.train), task_.test);
    data_digest_ = data_digest.hex();
  }

  /// A fresh model: the checkpoint's backbone (and pooler when it has one), a
  /// new N(0, 0.02) classifier for the task's labels.
  template <Adapter A>
  DebertaV2<B, A> load_model() {
    const WeightSource file = deberta_v2_weight_source(weights_, Head::New);
    base_parameters_ = 0;
    const WeightSource source = [&](const std::string& key, Index rows, Index cols) {
      base_parameters_ += rows * cols;
      return file(key, rows, cols);
    };
    return in_context<ValueError>("checkpoint '" + checkpoint_.string() + "'", [&] {
      return in_context<IoError>("'" + weights_.path().string() + "'",
                                 [&] { return DebertaV2<B, A>(config_, source, seed_); });
    });
  }

  [[nodiscard]] const Source& train() const { return train_; }
  [[nodiscard]] const Source& test() const { return test_; }
  /// k training examples per class (seeded), rebuilt when (k, seed) changes.
  const Source& few_shot(Index per_class, std::uint64_t seed) {
    if (!few_shot_ || few_shot_key_ != std::pair{per_class, seed}) {
      few_shot_.emplace(tokenizer_, few_shot_examples(task_.train, task_.regression(), per_class, seed), task_.pair,
                        batch_, max_length_, true, seed);
      few_shot_key_ = {per_class, seed};
    }
    return *few_shot_;
  }
  [[nodiscard]] metrics::Metric metric() const { return task_.metric; }
  [[nodiscard]] std::vector<std::string> head_prefixes() const { return {"pooler", "classifier"}; }
  [[nodiscard]] Index base_parameters() const { return base_parameters_; }
  [[nodiscard]] std::string checkpoint() const { return checkpoint_.string(); }

  /// Share of the test set in its most frequent class: the accuracy of always
  /// answering that class (0 for a regression).
  [[nodiscard]] double majority_baseline() const {
    if (task_.regression()) return 0.0;
    std::map<std::int32_t, Index> counts;
    for (const auto& e : task_.test) ++counts[e.label];
    Index most = 0;
    for (const auto& [label, n] : counts) most = std::max(most, n);
    return static_cast<double>(most) / static_cast<double>(task_.test.size());
  }

  [[nodiscard]] nlohmann::ordered_json describe() const {
    const DebertaV2Config& c = config_;
    nlohmann::ordered_json data = task_.data;
    data["task"] = task_.name;
    data["pair"] = task_.pair;
    data["train_examples"] = task_.train.size();
    data["test_examples"] = task_.test.size();
    data["classes"] = task_.labels;
    if (!task_.regression()) data["majority_class_accuracy"] = majority_baseline();
    data["digest"] = data_digest_;
    return {{"checkpoint", checkpoint_.string()},
            {"model",
             {{"type", "deberta-v2"},
              {"vocab_size", c.vocab_size},
              {"tokenizer_pieces", tokenizer_.vocab_size()},
              {"hidden_size", c.hidden_size},
              {"num_hidden_layers", c.num_hidden_layers},
              {"num_attention_heads", c.num_attention_heads},
              {"intermediate_size", c.intermediate_size},
              {"position_buckets", c.position_buckets},
              {"pos_att_type", c.pos_att_type},
              {"num_labels", c.num_labels},
              {"max_length", max_length_},
              {"head", "new classifier; pooler from the checkpoint when it has one"},
              {"weights_digest", weights_digest_}}},
            {"dataset", std::move(data)}};
  }

 private:
  std::filesystem::path checkpoint_;
  io::SafetensorsFile weights_;
  DebertaV2Tokenizer tokenizer_;
  DebertaV2Config config_;
  TextTask task_;
  Index batch_;
  Index max_length_;
  std::uint64_t seed_;
  Source train_, test_;
  std::optional<Source> few_shot_;
  std::pair<Index, std::uint64_t> few_shot_key_{};
  Index base_parameters_ = 0;
  std::string weights_digest_, data_digest_;  // what the checkpoint (with spm.model) and the examples hold
};

}  // namespace plora::runner
