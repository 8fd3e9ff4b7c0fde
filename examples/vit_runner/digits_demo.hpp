#pragma once
// The runner's built-in demo, which needs no download: scikit-learn's 8x8
// handwritten digits (Debian python3-sklearn). No pretrained checkpoint can be
// fetched, so a small ViT is first pretrained on a source task (digits 0-4):
// every linear site trains a FullDelta adapter, the head is trained in full,
// then the deltas are merged and the model is saved as a Hugging Face
// checkpoint directory (model.safetensors with Hub key names, config.json,
// preprocessor_config.json). It is cached: a later run reuses it when its
// pretrain.json records the same settings. The target task is digits 5-9.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <numeric>
#include <ostream>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/pipeline.hpp"
#include "common/report.hpp"
#include "plora/adapters/full_delta.hpp"
#include "plora/io/datasets.hpp"
#include "plora/io/safetensors.hpp"
#include "plora/models/sites.hpp"
#include "plora/models/vit.hpp"
#include "plora/sparsity/evaluate.hpp"
#include "plora/train/adamw.hpp"
#include "plora/train/callbacks.hpp"
#include "plora/train/schedule.hpp"
#include "plora/train/trainer.hpp"

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
/// One Hub tensor of the demo checkpoint: its shape as saved and its values.
struct HubTensor {
  std::vector<Index> shape;
  std::vector<float> values;
};

/// Every tensor of ViTForImageClassification for `c`, initialised from `seed`:
/// linear sites and head N(0, 0.02) (transformers' initializer_range) with zero
/// biases, LayerNorms 1 / 0. The embeddings get no gradient in plora (only
/// sites and head train), so they stay random features: patch projection
/// N(0, 1 / fan_in), CLS and position embeddings N(0, 0.5^2) so that position
/// is as visible as content after the first LayerNorm.
inline std::map<std::string, HubTensor> initial_vit_weights(const ViTConfig& c, std::uint64_t seed) {
  std::map<std::string, HubTensor> out;
  const auto add = [&](const std::string& key, std::vector<Index> shape, float std, float fill = 0.0f) {
    Index n = 1;
    for (const Index d : shape) n *= d;
    std::vector<float> values(static_cast<std::size_t>(n), fill);
    RandomStream rng(seed, stream_id(key));
    if (std > 0.0f)
      for (float& v : values) v = std * rng.normal();
    out[key] = {std::move(shape), std::move(values)};
  };
  const Index h = c.hidden_size, tokens = 1 + (c.image_size / c.patch_size) * (c.image_size / c.patch_size);
  const Index patch = c.num_channels * c.patch_size * c.patch_size;
  add("vit.embeddings.cls_token", {1, 1, h}, 0.5f);
  add("vit.embeddings.position_embeddings", {1, tokens, h}, 0.5f);
  add("vit.embeddings.patch_embeddings.projection.weight", {h, c.num_channels, c.patch_size, c.patch_size},
      static_cast<float>(1.0 / std::sqrt(static_cast<double>(patch))));
  add("vit.embeddings.patch_embeddings.projection.bias", {h}, 0.0f);
  const auto linear = [&](const std::string& key, Index out_features, Index in_features) {
    add(key + ".weight", {out_features, in_features}, 0.02f);
    add(key + ".bias", {out_features}, 0.0f);
  };
  const auto layernorm = [&](const std::string& key) {
    add(key + ".weight", {h}, 0.0f, 1.0f);
    add(key + ".bias", {h}, 0.0f);
  };
  for (Index i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "vit.encoder.layer." + std::to_string(i) + ".";
    for (const char* qkv : {"query", "key", "value"}) linear(p + "attention.attention." + qkv, h, h);
    linear(p + "attention.output.dense", h, h);
    linear(p + "intermediate.dense", c.intermediate_size, h);
    linear(p + "output.dense", h, c.intermediate_size);
    layernorm(p + "layernorm_before");
    layernorm(p + "layernorm_after");
  }
  layernorm("vit.layernorm");
  linear("classifier", c.num_labels, h);
  return out;
}

inline nlohmann::ordered_json hub_config_json(const ViTConfig& c) {
  nlohmann::ordered_json id2label = nlohmann::ordered_json::object(), label2id = nlohmann::ordered_json::object();
  for (std::size_t i = 0; i < c.id2label.size(); ++i) {
    id2label[std::to_string(i)] = c.id2label[i];
    label2id[c.id2label[i]] = i;
  }
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

/// Pretrains the demo ViT on `train` (evaluating on `test`) and writes the
/// checkpoint into `dir`; returns {"seconds", "source_accuracy"}.
/// @tparam B  backend
template <Backend B>
nlohmann::ordered_json pretrain_digits_vit(const std::filesystem::path& dir, const io::ImageDataset& train,
                                           const io::ImageDataset& test, const DigitsPretraining& p, bool quiet,
                                           std::ostream& log) {
  const auto start = Clock::now();
  const ViTConfig config = digits_vit_config();
  std::map<std::string, detail::HubTensor> weights = detail::initial_vit_weights(config, p.seed);
  using Model = Vit<B, FullDelta<B>>;
  Model model(config, [&](const std::string& key, Index rows, Index cols) {
    const auto found = weights.find(key);
    check<ValueError>(found != weights.end(), "demo ViT: no initial tensor '", key, "'");
    return HostMatrix(rows, cols, found->second.values);
  });
  const std::vector<std::string> every_site = model.site_names();
  attach_adapters(model, std::span<const std::string>(every_site), [&](const std::string& name, Index out, Index in) {
    return FullDelta<B>(out, in, {}, RandomStream(p.seed, stream_id(name)));
  });

  const io::ImageBatches batches(train, p.batch, p.seed);
  const TrainerConfig trainer_config{.epochs = p.epochs, .seed = p.seed};
  const Index total = planned_steps(trainer_config, batches.batches_per_epoch());
  AdamW<B> optimizer(AdamWConfig{.lr = p.lr, .weight_decay = p.weight_decay, .no_decay = {"bias"}});
  Trainer trainer(model, optimizer, trainer_config, LinearWarmupDecay(total / 10, total));
  if (!quiet) log << "pretraining the demo ViT on digits 0-4 (" << train.size() << " images, every linear site) ...\n";
  ConsoleProgress progress(log, quiet);
  trainer.fit(batches, progress);
  if (!quiet) log << '\n';

  const io::ImageBatches test_batches(test, p.batch, p.seed, io::ImageBatches::Order::Sequential);
  std::vector<ImageBatch> held_out;
  for (Index i = 0; i < test_batches.batches_per_epoch(); ++i) held_out.push_back(test_batches.batch(0, i));
  const double accuracy = evaluate_metric(model, std::span<const ImageBatch>(held_out), metrics::Metric::Accuracy);

  // W <- W + ΔW, then save every tensor under its Hub name and shape.
  io::SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  for (const auto& name : every_site) {
    auto& site = model.site(name);
    site.adapter().merge_into(site.mutable_weight());
    weights.at(name + ".weight").values = to_host<B>(site.weight()).values();
  }
  weights.at("classifier.weight").values = to_host<B>(model.classifier().weight()).values();
  weights.at("classifier.bias").values = to_host<B>(model.classifier().bias()).values();
  for (const auto& [key, tensor] : weights) writer.add(key, tensor.shape, std::span<const float>(tensor.values));
  std::filesystem::create_directories(dir);
  writer.write(dir / "model.safetensors");
  write_json(dir / "config.json", detail::hub_config_json(config));
  write_json(dir / "preprocessor_config.json", detail::digits_preprocessor_json(config));
  nlohmann::ordered_json result{{"seconds", seconds_since(start)}, {"source_accuracy", accuracy}};
  nlohmann::ordered_json stamp = detail::pretraining_key(config, p);
  stamp["result"] = result;
  write_json(dir / "pretrain.json", stamp);  // last: marks the directory complete
  return result;
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

  const nlohmann::ordered_json key = detail::pretraining_key(digits_vit_config(), p);
  nlohmann::ordered_json pretraining;
  const std::filesystem::path stamp = dir / "pretrain.json";
  bool reuse = std::filesystem::is_regular_file(stamp) && std::filesystem::is_regular_file(dir / "model.safetensors");
  if (reuse) {
    nlohmann::ordered_json saved = nlohmann::ordered_json::parse(io::detail::read_file(stamp), nullptr, false);
    reuse = !saved.is_discarded() && saved.contains("result");
    if (reuse) {
      pretraining = saved["result"];
      saved.erase("result");
      reuse = saved == key;
    }
  }
  if (reuse) {
    if (!quiet) log << "reusing the pretrained demo ViT in " << dir.string() << '\n';
  } else {
    const io::ImageDataset pretrain_set = limited(std::move(source_train), p.max_examples);
    pretraining = pretrain_digits_vit<B>(dir, pretrain_set, source_test, p, quiet, log);
  }
  pretraining["reused"] = reuse;
  pretraining["dir"] = dir.string();
  if (!quiet)
    log << "source task (digits 0-4) accuracy of the pretrained ViT: "
        << format_number(pretraining["source_accuracy"].get<double>()) << '\n';
  return {dir, std::move(target_train), std::move(target_test), std::move(pretraining)};
}

}  // namespace plora::runner
