#pragma once
// Loading a Hugging Face DeBERTa-v2/v3 checkpoint (model.safetensors) into
// DebertaV2<B, A>. Keys may carry the "deberta." prefix of the task models
// (ForSequenceClassification, ForMaskedLM) or none (DebertaV2Model); tensors
// the model does not use (lm_predictions.*, mask_predictions.*) are ignored;
// pooler and classifier are initialised randomly when absent (deberta-v3-base
// ships neither). The config comes from config.json (io/hf_config.hpp).
// A loaded model's site names match PEFT's target_modules paths (deberta.encoder.layer.<i>....).
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "plora/core/error.hpp"
#include "plora/io/checkpoint_layers.hpp"
#include "plora/io/hf_config.hpp"
#include "plora/io/safetensors.hpp"
#include "plora/models/deberta_v2.hpp"

namespace plora {

/// The WeightSource of a DeBERTa safetensors file: Hub keys (deberta.*)
/// mapped to the file's prefix convention; a key the file lacks gives
/// nullopt, so the model draws it (pooler, classifier) or names it (a
/// backbone tensor). With Head::New, classifier.* are drawn even when the file
/// has them (a new task's head; a pooler the file has is kept). A shape that
/// disagrees with the requested one or a NaN / Inf entry throws (ShapeError /
/// NumericError naming the tensor).
inline WeightSource deberta_v2_weight_source(const io::SafetensorsFile& weights, Head head = Head::FromCheckpoint) {
  const std::string prefix = "deberta.";
  const bool bare = !weights.contains(prefix + "embeddings.word_embeddings.weight") &&
                    weights.contains("embeddings.word_embeddings.weight");
  return [&weights, prefix, bare, head](const std::string& key, Index rows, Index cols) -> std::optional<HostMatrix> {
    const std::string stored = bare && key.starts_with(prefix) ? key.substr(prefix.size()) : key;
    if ((head == Head::New && key.starts_with("classifier.")) || !weights.contains(stored)) return std::nullopt;
    return weights.load_finite(stored, rows, cols);
  };
}

/// @tparam B  backend
/// @tparam A  adapter type the model's sites may carry
/// @param path  a model.safetensors file, or a checkpoint directory holding one
/// @param seed  seeds the random pooler / classifier when the file has none
template <Backend B, Adapter A>
DebertaV2<B, A> load_deberta_v2(const std::filesystem::path& path, const DebertaV2Config& config,
                                std::uint64_t seed = 0) {
  const std::filesystem::path file = std::filesystem::is_directory(path) ? path / "model.safetensors" : path;
  check<IoError>(std::filesystem::is_regular_file(file), "DeBERTa checkpoint '", file.string(), "' does not exist");
  const io::SafetensorsFile weights = io::SafetensorsFile::open(file);
  io::check_no_layers_beyond(weights, config.num_hidden_layers, file.string());
  return in_context<IoError>("'" + file.string() + "'",
                             [&] { return DebertaV2<B, A>(config, deberta_v2_weight_source(weights), seed); });
}

/// A checkpoint directory with config.json and model.safetensors.
template <Backend B, Adapter A>
DebertaV2<B, A> load_deberta_v2(const std::filesystem::path& directory, std::uint64_t seed = 0) {
  const DebertaV2Config config = io::load_deberta_v2_config(directory / "config.json");
  return in_context<ValueError>("DeBERTa checkpoint '" + directory.string() + "'",
                                [&] { return load_deberta_v2<B, A>(directory, config, seed); });
}

}  // namespace plora
