#pragma once
// Hugging Face config.json -> plora::ViTConfig / plora::DebertaV2Config, and
// preprocessor_config.json -> PreprocessorConfig.
//
// An absent (or null) field takes the value transformers would use, which for
// DeBERTa-v2 is the *class* default or the modelling code's getattr fallback,
// not DeBERTa-v3's published values (REFERENCE.md §2): relative_attention
// false, position_biased_input true, pos_att_type [], share_att_key false,
// position_buckets -1 (no bucketing), norm_rel_ebd "none", hidden_size 1536,
// 24 layers and heads, intermediate_size 6144. Labels follow PretrainedConfig:
// id2label, when present, defines num_labels (and wins over a conflicting
// num_labels); otherwise num_labels, default 2. A field of the wrong JSON type
// is an IoError naming the file and the field; an invalid value (a
// non-positive size, an unknown pos_att_type, another model_type) is a
// ValueError naming both.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "plora/core/decimal.hpp"
#include "plora/core/error.hpp"
#include "plora/io/detail/json_fields.hpp"
#include "plora/models/deberta_v2_config.hpp"
#include "plora/models/vit_config.hpp"
#include "plora/nn/patch_grid.hpp"

namespace plora::io {

/// The largest side a preprocessed image may have. A resized image is held as
/// floats, channels x height x width: 16384 a side is already 3 GiB for RGB, far
/// beyond any ViT input, so a larger one is a mistake that would otherwise end
/// in an allocation failure.
inline constexpr Index kMaxImageSide = 16384;

/// What ViTImageProcessor (and processors like it) do to an image, with
/// ViTImageProcessor's defaults: resize to 224 x 224 bilinear, rescale by
/// 1/255, normalise with mean = std = 0.5 per channel.
struct PreprocessorConfig {
  bool do_resize = true;
  Index height = 224;        ///< target size when size is {height, width} (or a single int)
  Index width = 224;
  Index shortest_edge = 0;   ///< > 0 when size is {"shortest_edge": n}: aspect-preserving resize
  int resample = 2;          ///< PIL filter id: 0 nearest, 2 bilinear (others unsupported)
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;  ///< applied in double, like transformers' rescale
  bool do_normalize = true;
  std::vector<float> image_mean = {0.5f, 0.5f, 0.5f};  ///< one value per channel, or one for all
  std::vector<float> image_std = {0.5f, 0.5f, 0.5f};
};

namespace detail {

/// num_labels and the id -> label names of a PretrainedConfig.
inline void read_labels(const JsonFields& fields, Index& num_labels, std::vector<std::string>* names) {
  fields.read("num_labels", num_labels);
  if (!fields.has("id2label")) {
    check<ValueError>(num_labels >= 1, "'", fields.source(), "': field 'num_labels' must be >= 1, got ", num_labels);
    return;
  }
  const auto& map = fields.at("id2label");
  fields.require(map.is_object(), "id2label", "an object {\"0\": name, ...}", map);
  std::map<Index, std::string> by_id;
  for (const auto& [key, value] : map.items()) {
    const std::optional<Index> id = plora::detail::parse_index(key);
    fields.require(id && value.is_string(), "id2label", "a map from non-negative integer strings to names", map);
    by_id.emplace(*id, value.get<std::string>());
  }
  const auto n = static_cast<Index>(by_id.size());
  check<ValueError>(n >= 1 && by_id.rbegin()->first == n - 1, "'", fields.source(),
                    "': field 'id2label' must have the ids 0..n-1, got ", map.dump());
  num_labels = n;
  if (names != nullptr) {
    names->clear();
    for (auto& [id, name] : by_id) names->push_back(std::move(name));
  }
}

inline void require_positive(const JsonFields& fields, std::string_view field, Index value) {
  check<ValueError>(value > 0, "'", fields.source(), "': field '", field, "' must be positive, got ", value);
}

/// Lower-cased, without spaces: transformers' normalisation of pos_att_type entries.
inline std::string trim_lower(std::string_view text) {
  std::string out;
  for (const unsigned char c : text)
    if (!std::isspace(c)) out.push_back(static_cast<char>(std::tolower(c)));
  return out;
}

/// "p2c|c2p" -> {"p2c", "c2p"}, each part trimmed and lower-cased.
inline std::vector<std::string> split_lower(std::string_view text, char separator) {
  std::vector<std::string> parts;
  for (std::size_t start = 0; start <= text.size();) {
    const std::size_t stop = std::min(text.find(separator, start), text.size());
    parts.push_back(trim_lower(text.substr(start, stop - start)));
    start = stop + 1;
  }
  return parts;
}

/// A config.json of another architecture (a DeiT's, a BERT's) often parses
/// as this one's; its model_type, when present, says which it is.
inline void require_model_type(const JsonFields& fields, std::string_view expected, std::string_view model) {
  std::string model_type(expected);
  fields.read("model_type", model_type);
  check<ValueError>(model_type == expected, "'", fields.source(), "': model_type '", model_type, "' is not ", model,
                    "'s '", expected, "'");
}

}  // namespace detail

/// ViT config from a parsed config.json; `source` names the file in errors.
inline ViTConfig parse_vit_config(const nlohmann::json& json, const std::string& source = "config.json") {
  const detail::JsonFields f(json, source);
  ViTConfig c;
  detail::require_model_type(f, "vit", "ViT");
  f.read("hidden_size", c.hidden_size);
  f.read("num_hidden_layers", c.num_hidden_layers);
  f.read("num_attention_heads", c.num_attention_heads);
  f.read("intermediate_size", c.intermediate_size);
  f.read("hidden_act", c.hidden_act);
  f.read("layer_norm_eps", c.layer_norm_eps);
  f.read("image_size", c.image_size);
  f.read("patch_size", c.patch_size);
  f.read("num_channels", c.num_channels);
  f.read("qkv_bias", c.qkv_bias);
  f.read("hidden_dropout_prob", c.hidden_dropout_prob);
  f.read("attention_probs_dropout_prob", c.attention_probs_dropout_prob);
  detail::read_labels(f, c.num_labels, &c.id2label);
  for (const auto& [field, value] : {std::pair{"hidden_size", c.hidden_size}, {"num_hidden_layers", c.num_hidden_layers},
                                     {"num_attention_heads", c.num_attention_heads},
                                     {"intermediate_size", c.intermediate_size}, {"image_size", c.image_size},
                                     {"patch_size", c.patch_size}, {"num_channels", c.num_channels}})
    detail::require_positive(f, field, value);
  check<ValueError>(c.hidden_size % c.num_attention_heads == 0, "'", source, "': hidden_size ", c.hidden_size,
                    " is not a multiple of num_attention_heads ", c.num_attention_heads);
  in_context<ValueError>("'" + source + "'", [&] { check_patch_grid(c.num_channels, c.image_size, c.patch_size); });
  check<ValueError>(c.layer_norm_eps > 0.0f, "'", source, "': field 'layer_norm_eps' must be positive");
  return c;
}

inline ViTConfig load_vit_config(const std::filesystem::path& path) {
  return parse_vit_config(detail::read_json_file(path), path.string());
}

/// transformers' DebertaV2Config() with no arguments plus the modelling code's
/// getattr fallbacks: what an absent config.json field means.
inline DebertaV2Config hf_default_deberta_v2_config() {
  DebertaV2Config c;
  c.vocab_size = 128100;
  c.hidden_size = 1536;
  c.num_hidden_layers = 24;
  c.num_attention_heads = 24;
  c.intermediate_size = 6144;
  c.relative_attention = false;
  c.max_relative_positions = -1;
  c.position_buckets = -1;
  c.share_att_key = false;
  c.pos_att_type = {};
  c.norm_rel_ebd = "none";
  c.position_biased_input = true;
  c.embedding_size = -1;
  c.pooler_hidden_size = -1;
  c.cls_dropout = -1.0f;
  c.num_labels = 2;
  c.problem_type.clear();
  return c;
}

/// DeBERTa-v2/v3 config from a parsed config.json; `source` names the file in errors.
inline DebertaV2Config parse_deberta_v2_config(const nlohmann::json& json, const std::string& source = "config.json") {
  const detail::JsonFields f(json, source);
  DebertaV2Config c = hf_default_deberta_v2_config();
  detail::require_model_type(f, "deberta-v2", "DeBERTa-v2/v3");
  f.read("vocab_size", c.vocab_size);
  f.read("hidden_size", c.hidden_size);
  f.read("num_hidden_layers", c.num_hidden_layers);
  f.read("num_attention_heads", c.num_attention_heads);
  f.read("intermediate_size", c.intermediate_size);
  f.read("hidden_act", c.hidden_act);
  f.read("hidden_dropout_prob", c.hidden_dropout_prob);
  f.read("attention_probs_dropout_prob", c.attention_probs_dropout_prob);
  f.read("max_position_embeddings", c.max_position_embeddings);
  f.read("type_vocab_size", c.type_vocab_size);
  f.read("layer_norm_eps", c.layer_norm_eps);
  f.read("relative_attention", c.relative_attention);
  f.read("max_relative_positions", c.max_relative_positions);
  f.read("position_buckets", c.position_buckets);
  f.read("share_att_key", c.share_att_key);
  f.read("norm_rel_ebd", c.norm_rel_ebd);
  f.read("position_biased_input", c.position_biased_input);
  f.read("embedding_size", c.embedding_size);
  f.read("pad_token_id", c.pad_token_id);
  f.read("pooler_hidden_size", c.pooler_hidden_size);
  f.read("pooler_hidden_act", c.pooler_hidden_act);
  f.read("pooler_dropout", c.pooler_dropout);
  f.read("cls_dropout", c.cls_dropout);
  f.read("problem_type", c.problem_type);
  detail::read_labels(f, c.num_labels, nullptr);

  if (f.has("pos_att_type")) {
    const auto& v = f.at("pos_att_type");
    if (v.is_string()) {
      c.pos_att_type = detail::split_lower(v.get<std::string>(), '|');
    } else {
      f.require(v.is_array() && std::ranges::all_of(v, [](const auto& x) { return x.is_string(); }), "pos_att_type",
                "a \"p2c|c2p\" string or a list of strings", v);
      c.pos_att_type.clear();
      for (const auto& x : v) c.pos_att_type.push_back(detail::trim_lower(x.get<std::string>()));
    }
    std::erase(c.pos_att_type, std::string());  // "" from an empty string or a trailing '|'
    for (const auto& kind : c.pos_att_type)
      check<ValueError>(kind == "p2c" || kind == "c2p", "'", source, "': pos_att_type entry '", kind,
                        "' is not supported (expected p2c and/or c2p)");
  }
  for (const auto& part : detail::split_lower(c.norm_rel_ebd, '|'))
    check<ValueError>(part == "none" || part == "layer_norm", "'", source, "': norm_rel_ebd '", c.norm_rel_ebd,
                      "' is not supported (expected none or layer_norm)");

  for (const auto& [field, value] :
       {std::pair{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size}, {"num_hidden_layers", c.num_hidden_layers},
        {"num_attention_heads", c.num_attention_heads}, {"intermediate_size", c.intermediate_size},
        {"max_position_embeddings", c.max_position_embeddings}})
    detail::require_positive(f, field, value);
  check<ValueError>(c.type_vocab_size >= 0, "'", source, "': field 'type_vocab_size' must be >= 0");
  check<ValueError>(c.hidden_size % c.num_attention_heads == 0, "'", source, "': hidden_size ", c.hidden_size,
                    " is not a multiple of num_attention_heads ", c.num_attention_heads);
  check<ValueError>(c.layer_norm_eps > 0.0f, "'", source, "': field 'layer_norm_eps' must be positive");
  check<ValueError>(c.problem_type.empty() || c.problem_type == "regression" ||
                        c.problem_type == "single_label_classification" ||
                        c.problem_type == "multi_label_classification",
                    "'", source, "': unknown problem_type '", c.problem_type, "'");
  check<ValueError>(c.problem_type != "single_label_classification" || c.num_labels > 1, "'", source,
                    "': problem_type single_label_classification needs num_labels > 1");

  // Architecture switches transformers honours but plora does not implement:
  // refuse them rather than silently building a different model.
  Index conv_kernel_size = 0, attention_head_size = c.hidden_size / c.num_attention_heads;
  f.read("conv_kernel_size", conv_kernel_size);
  f.read("attention_head_size", attention_head_size);
  check<ValueError>(conv_kernel_size <= 0, "'", source, "': conv_kernel_size ", conv_kernel_size,
                    " (DeBERTa's ConvLayer) is not supported");
  check<ValueError>(attention_head_size == c.hidden_size / c.num_attention_heads, "'", source, "': attention_head_size ",
                    attention_head_size, " differs from hidden_size / num_attention_heads, which plora assumes");
  return c;
}

inline DebertaV2Config load_deberta_v2_config(const std::filesystem::path& path) {
  return parse_deberta_v2_config(detail::read_json_file(path), path.string());
}

/// Preprocessing settings from a parsed preprocessor_config.json.
inline PreprocessorConfig parse_preprocessor_config(const nlohmann::json& json,
                                                    const std::string& source = "preprocessor_config.json") {
  const detail::JsonFields f(json, source);
  PreprocessorConfig c;
  f.read("do_resize", c.do_resize);
  if (f.has("size")) {
    const auto& size = f.at("size");
    if (size.is_number_integer()) {  // legacy: one int for a square
      c.height = c.width = size.get<Index>();
    } else {
      f.require(size.is_object(), "size", "an integer or an object {height, width} / {shortest_edge}", size);
      // Exactly one of the two key sets, as transformers' get_size_dict demands: a mix is ambiguous, and
      // other keys (longest_edge, max_height, ...) ask for resizes plora does not do.
      const bool height_width = size.size() == 2 && size.contains("height") && size.contains("width");
      const bool shortest = size.size() == 1 && size.contains("shortest_edge");
      f.require(height_width || shortest, "size", "{height, width} or {shortest_edge}", size);
      const detail::JsonFields s(size, source + " (size)");
      if (shortest) {
        s.read("shortest_edge", c.shortest_edge);
        detail::require_positive(f, "size.shortest_edge", c.shortest_edge);
      } else {
        s.read("height", c.height);
        s.read("width", c.width);
      }
    }
  }
  detail::require_positive(f, "size.height", c.height);
  detail::require_positive(f, "size.width", c.width);
  for (const auto& [field, value] :
       {std::pair{"size.height", c.height}, {"size.width", c.width}, {"size.shortest_edge", c.shortest_edge}})
    check<ValueError>(value <= kMaxImageSide, "'", source, "': field '", field, "' is ", value, ", above the ",
                      kMaxImageSide, " pixels plora accepts per side");
  bool do_center_crop = false;
  f.read("do_center_crop", do_center_crop);
  check<ValueError>(!do_center_crop, "'", source,
                    "': field 'do_center_crop' is true, but plora resizes like ViTImageProcessor and does not crop; "
                    "this preprocessor's images would differ from the model's");
  Index resample = c.resample;
  f.read("resample", resample);
  c.resample = static_cast<int>(resample);
  f.read("do_rescale", c.do_rescale);
  f.read("rescale_factor", c.rescale_factor);
  check<ValueError>(std::isfinite(c.rescale_factor) && c.rescale_factor > 0.0, "'", source,
                    "': field 'rescale_factor' must be finite and positive, got ", c.rescale_factor);
  f.read("do_normalize", c.do_normalize);
  f.read("image_mean", c.image_mean);
  f.read("image_std", c.image_std);
  check<ValueError>(!c.image_mean.empty() && !c.image_std.empty(), "'", source,
                    "': image_mean and image_std must not be empty");
  check<ValueError>(std::ranges::none_of(c.image_std, [](float s) { return s == 0.0f; }), "'", source,
                    "': image_std has a zero entry");
  return c;
}

inline PreprocessorConfig load_preprocessor_config(const std::filesystem::path& path) {
  return parse_preprocessor_config(detail::read_json_file(path), path.string());
}

}  // namespace plora::io
