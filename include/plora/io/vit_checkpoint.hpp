#pragma once
// Loading a Hugging Face ViT checkpoint (config.json + model.safetensors) into
// Vit<B, A>. Keys may carry the "vit." prefix of ViTForImageClassification or
// none (ViTModel); tensors the model does not use (pooler.*) are ignored.
// load_vit keeps the file's classifier only when it has the config's number
// of labels; otherwise the model draws a new one (fine-tuning an ImageNet
// checkpoint on CIFAR-10), which METHOD.md §2 step 1 then fits with a linear
// probe before ratios are extracted.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "plora/core/error.hpp"
#include "plora/io/checkpoint_layers.hpp"
#include "plora/io/hf_config.hpp"
#include "plora/io/safetensors.hpp"
#include "plora/models/vit.hpp"

namespace plora {

namespace detail {
inline std::filesystem::path vit_weights_file(const std::filesystem::path& path) {
  const std::filesystem::path file = std::filesystem::is_directory(path) ? path / "model.safetensors" : path;
  check<IoError>(std::filesystem::is_regular_file(file), "ViT checkpoint '", file.string(), "' does not exist");
  return file;
}
}  // namespace detail

/// Whether `weights` holds a classifier for `num_labels` classes (else load_vit draws one).
inline bool vit_head_matches(const io::SafetensorsFile& weights, Index num_labels) {
  for (const std::string key : {"classifier.weight", "classifier.bias"}) {
    if (!weights.contains(key)) return false;
    const auto& shape = weights.info(key).shape;
    if (shape.empty() || shape.front() != num_labels) return false;
  }
  return true;
}

/// The WeightSource of a ViT safetensors file: Hub keys mapped to the file's
/// prefix convention. classifier.* come from the file with Head::FromCheckpoint
/// where it has them; otherwise (and always with Head::New) the source has
/// none and the model draws them. A missing backbone key, a shape that
/// disagrees with the requested one or a NaN / Inf entry throws (IoError /
/// ShapeError / NumericError naming the file and the tensor).
inline WeightSource vit_weight_source(const io::SafetensorsFile& weights, Head head = Head::FromCheckpoint) {
  const std::string prefix = "vit.";
  const bool bare = !weights.contains(prefix + "embeddings.cls_token") && weights.contains("embeddings.cls_token");
  return [&weights, prefix, bare, head](const std::string& key, Index rows, Index cols) -> std::optional<HostMatrix> {
    if (key.starts_with("classifier.") && (head == Head::New || !weights.contains(key))) return std::nullopt;
    return weights.load_finite(bare && key.starts_with(prefix) ? key.substr(prefix.size()) : key, rows, cols);
  };
}

/// A ViT from a model.safetensors file (or a directory holding one) for `config`.
/// @tparam B  backend
/// @tparam A  adapter type the model's sites may carry
/// @param seed  seeds a new classifier and the model's dropout
template <Backend B, Adapter A>
Vit<B, A> load_vit(const std::filesystem::path& path, const ViTConfig& config, std::uint64_t seed = 0) {
  const std::filesystem::path file = detail::vit_weights_file(path);
  const io::SafetensorsFile weights = io::SafetensorsFile::open(file);
  io::check_no_layers_beyond(weights, config.num_hidden_layers, file.string());
  const Head head = vit_head_matches(weights, config.num_labels) ? Head::FromCheckpoint : Head::New;
  return Vit<B, A>(config, vit_weight_source(weights, head), seed);
}

/// The config.json of a checkpoint directory, with num_labels replaced (and
/// the label names dropped) when `num_labels` is given.
inline ViTConfig load_vit_checkpoint_config(const std::filesystem::path& directory,
                                            std::optional<Index> num_labels = std::nullopt) {
  ViTConfig config = io::load_vit_config(directory / "config.json");
  if (num_labels && *num_labels != config.num_labels) {
    check<ValueError>(*num_labels > 0, "ViT checkpoint '", directory.string(), "': num_labels ", *num_labels,
                      " must be positive");
    config.num_labels = *num_labels;
    config.id2label.clear();
  }
  return config;
}

/// A ViT from a checkpoint directory (config.json + model.safetensors), with
/// a new head when `num_labels` differs from the checkpoint's.
template <Backend B, Adapter A>
Vit<B, A> load_vit_checkpoint(const std::filesystem::path& directory, std::optional<Index> num_labels = std::nullopt,
                              std::uint64_t seed = 0) {
  const ViTConfig config = load_vit_checkpoint_config(directory, num_labels);
  return in_context<ValueError>("ViT checkpoint '" + directory.string() + "'",
                                [&] { return load_vit<B, A>(directory, config, seed); });
}

}  // namespace plora
