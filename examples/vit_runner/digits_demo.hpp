#pragma once
// The runner's built-in demo, which needs no download: scikit-learn's 8x8
// handwritten digits (Debian python3-sklearn). No pretrained checkpoint can be
// fetched, so a small ViT is first pretrained on a source task (digits 0-4)
// and cached as a Hugging Face checkpoint directory (model.safetensors with Hub
// key names, config.json, preprocessor_config.json) by the flow both demos
// share (common/demo_pretraining.hpp). The target task is digits 5-9.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "common/demo_pretraining.hpp"
#include "common/pipeline.hpp"
#include "common/report.hpp"
#include "plora/adapters/full_delta.hpp"
#include "plora/io/datasets.hpp"
#include "plora/models/vit.hpp"

namespace plora::runner {

/// How the demo's source model is pretrained; all of it is part of the cache key.
struct DigitsPretraining {
  Index epochs = 30;
  double lr = 3e-3;
  Index batch = 32;
  double weight_decay = 0.01;
  std::uint64_t seed = 0;  ///< initialisation and batch order; independent of the run's --seed
  Index max_examples = 0;  ///< pretrain on at most this many source images (0 = all)
};

/// The demo ViT: 8x8 grey images in 2x2 patches (16 tokens + CLS).
inline ViTConfig digits_vit_config() {
  ViTConfig c;
  c.hidden_size = 64;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.intermediate_size = 128;
  c.image_size = 8;
  c.patch_size = 2;
  c.num_channels = 1;
  c.num_labels = 5;
  c.id2label = {"0", "1", "2", "3", "4"};
  return c;
}

/// The data split of the demo (a fixed seed, so every run sees the same test set).
inline constexpr std::uint64_t kDigitsSplitSeed = 0;
inline constexpr double kDigitsTestFraction = 0.2;

/// A seeded random subset of at most `limit` examples (in dataset order); all when limit is 0.
inline io::ImageDataset limited(io::ImageDataset data, Index limit) {
  if (limit <= 0 || limit >= data.size()) return data;
  std::vector<Index> order(static_cast<std::size_t>(data.size()));
  std::iota(order.begin(), order.end(), Index{0});
  RandomStream rng(0, stream_id("vit_runner.limit"));
  io::detail::shuffle(order, rng);
  order.resize(static_cast<std::size_t>(limit));
  std::sort(order.begin(), order.end());
  return io::subset(data, order);
}

/// The examples of `data` whose label is in [first, first + count), relabelled from 0.
inline io::ImageDataset digits_classes(const io::ImageDataset& data, std::int32_t first, std::int32_t count) {
  std::vector<Index> chosen;
  for (Index i = 0; i < data.size(); ++i) {
    const std::int32_t label = data.labels[static_cast<std::size_t>(i)];
    if (label >= first && label < first + count) chosen.push_back(i);
  }
  io::ImageDataset out = io::subset(data, chosen);
  for (auto& label : out.labels) label -= first;
  out.num_classes = count;
  out.class_names.assign(data.class_names.begin() + first, data.class_names.begin() + first + count);
  return out;
}

namespace detail {
/// Every tensor of ViTForImageClassification for `c`, initialised from `seed`:
/// linear sites and head as transformers initialises them, LayerNorms 1 / 0.
/// The embeddings get no gradient in plora (only sites and head train), so
/// they stay random features: patch projection N(0, 1 / fan_in), CLS and
/// position embeddings N(0, 0.5^2) so that position is as visible as content
/// after the first LayerNorm.
inline HubTensors initial_vit_weights(const ViTConfig& c, std::uint64_t seed) {
  HubTensorInit init(seed);
  const Index h = c.hidden_size, tokens = 1 + (c.image_size / c.patch_size) * (c.image_size / c.patch_size);
  const Index patch = c.num_channels * c.patch_size * c.patch_size;
  init.add("vit.embeddings.cls_token", {1, 1, h}, 0.5f);
  init.add("vit.embeddings.position_embeddings", {1, tokens, h}, 0.5f);
  init.add("vit.embeddings.patch_embeddings.projection.weight", {h, c.num_channels, c.patch_size, c.patch_size},
           static_cast<float>(1.0 / std::sqrt(static_cast<double>(patch))));
  init.add("vit.embeddings.patch_embeddings.projection.bias", {h}, 0.0f);
  for (Index i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "vit.encoder.layer." + std::to_string(i) + ".";
    for (const char* qkv : {"query", "key", "value"}) init.linear(p + "attention.attention." + qkv, h, h);
    init.linear(p + "attention.output.dense", h, h);
    init.linear(p + "intermediate.dense", c.intermediate_size, h);
    init.linear(p + "output.dense", h, c.intermediate_size);
    init.layernorm(p + "layernorm_before", h);
    init.layernorm(p + "layernorm_after", h);
  }
  init.layernorm("vit.layernorm", h);
  init.linear("classifier", c.num_labels, h);
  return std::move(init).take();
}

inline nlohmann::ordered_json hub_config_json(const ViTConfig& c) {
  const auto [id2label, label2id] = hub_label_maps(c.id2label);
  return {{"architectures", {"ViTForImageClassification"}},
          {"model_type", "vit"},
          {"attention_probs_dropout_prob", 0.0},
          {"hidden_dropout_prob", 0.0},
          {"hidden_act", c.hidden_act},
          {"hidden_size", c.hidden_size},
          {"num_hidden_layers", c.num_hidden_layers},
          {"num_attention_heads", c.num_attention_heads},
          {"intermediate_size", c.intermediate_size},
          {"layer_norm_eps", c.layer_norm_eps},
          {"image_size", c.image_size},
          {"patch_size", c.patch_size},
          {"num_channels", c.num_channels},
          {"qkv_bias", c.qkv_bias},
          {"encoder_stride", c.patch_size},
          {"initializer_range", 0.02},
          {"id2label", id2label},
          {"label2id", label2id},
          {"torch_dtype", "float32"}};
}

/// ViTImageProcessor settings for digits pixels 0..16 at their own 8x8 size.
inline nlohmann::ordered_json digits_preprocessor_json(const ViTConfig& c) {
  const io::PreprocessorConfig p = io::sklearn_digits_preprocessor();
  return {{"image_processor_type", "ViTImageProcessor"},
          {"do_resize", p.do_resize},
          {"size", {{"height", c.image_size}, {"width", c.image_size}}},
          {"resample", p.resample},
          {"do_rescale", p.do_rescale},
          {"rescale_factor", p.rescale_factor},
          {"do_normalize", p.do_normalize},
          {"image_mean", p.image_mean},
          {"image_std", p.image_std}};
}

inline nlohmann::ordered_json pretraining_key(const ViTConfig& c, const DigitsPretraining& p) {
  return {{"format", "plora.digits_pretraining"},
          {"version", 1},
          {"source_task", "sklearn digits 0-4"},
          {"config", hub_config_json(c)},
          {"epochs", p.epochs},
          {"lr", p.lr},
          {"batch", p.batch},
          {"weight_decay", p.weight_decay},
          {"seed", p.seed},
          {"max_examples", p.max_examples},
          {"test_fraction", kDigitsTestFraction},
          {"split_seed", kDigitsSplitSeed}};
}
}  // namespace detail

/// Pretrains the demo ViT on `train` (evaluating on `test`) and writes
/// model.safetensors, config.json and preprocessor_config.json into `dir`;
/// returns {"seconds", "source_accuracy"}.
/// @tparam B  backend
template <Backend B>
nlohmann::ordered_json pretrain_digits_vit(const std::filesystem::path& dir, const io::ImageDataset& train,
                                           const io::ImageDataset& test, const DigitsPretraining& p, bool quiet,
                                           std::ostream& log) {
  const auto start = Clock::now();
  const ViTConfig config = digits_vit_config();
  HubTensors weights = detail::initial_vit_weights(config, p.seed);
  Vit<B, FullDelta<B>> model(config, [&](const std::string& key, Index rows, Index cols) {
    return hub_tensor(weights, "ViT", key, rows, cols);
  });
  if (!quiet) log << "pretraining the demo ViT on digits 0-4 (" << train.size() << " images, every linear site) ...\n";
  const io::ImageBatches batches(train, p.batch, p.seed);
  const io::ImageBatches test_batches(test, p.batch, p.seed, io::ImageBatches::Order::Sequential);
  const double accuracy = pretrain_every_site(model, batches, test_batches, p, quiet, log);
  save_hub_weights(dir / "model.safetensors", std::move(weights), model, {&model.classifier()});
  write_json(dir / "config.json", detail::hub_config_json(config));
  write_json(dir / "preprocessor_config.json", detail::digits_preprocessor_json(config));
  return {{"seconds", seconds_since(start)}, {"source_accuracy", accuracy}};
}

/// The demo's data and checkpoint.
struct DigitsDemo {
  std::filesystem::path checkpoint;
  io::ImageDataset train, test;  ///< digits 5-9 relabelled 0-4, stratified 80 / 20 split
  nlohmann::ordered_json pretraining;
};

/// Loads the digits, reuses or (re)builds the pretrained checkpoint in `dir`,
/// and returns the target task's split.
template <Backend B>
DigitsDemo prepare_digits_demo(const std::filesystem::path& dir, const DigitsPretraining& p, bool quiet,
                               std::ostream& log) {
  const io::ImageDataset digits = io::load_sklearn_digits();
  auto [source_train, source_test] = io::split(digits_classes(digits, 0, 5), kDigitsTestFraction, kDigitsSplitSeed);
  auto [target_train, target_test] = io::split(digits_classes(digits, 5, 5), kDigitsTestFraction, kDigitsSplitSeed);

  nlohmann::ordered_json pretraining = cached_demo_checkpoint(
      dir, detail::pretraining_key(digits_vit_config(), p), {"model.safetensors"}, {"ViT", "digits 0-4"}, quiet, log,
      [&] {
        const io::ImageDataset pretrain_set = limited(std::move(source_train), p.max_examples);
        return pretrain_digits_vit<B>(dir, pretrain_set, source_test, p, quiet, log);
      });
  return {dir, std::move(target_train), std::move(target_test), std::move(pretraining)};
}

}  // namespace plora::runner
