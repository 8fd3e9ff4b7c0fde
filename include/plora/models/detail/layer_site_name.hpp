#pragma once
// Parsing the layer-numbered site names both models use ("<prefix><layer>.<suffix>").
#include <charconv>
#include <optional>
#include <string_view>
#include <system_error>

#include "plora/core/view.hpp"

namespace plora::detail {

struct LayerSiteName {
  Index layer = -1;
  std::string_view suffix;  ///< e.g. "attention.attention.query"
};

/// (layer, suffix) of "<prefix><layer>.<suffix>", or nothing when `name` has another form.
inline std::optional<LayerSiteName> parse_layer_site_name(std::string_view name, std::string_view prefix) {
  if (!name.starts_with(prefix)) return std::nullopt;
  name.remove_prefix(prefix.size());
  Index layer = -1;
  const auto [end, error] = std::from_chars(name.data(), name.data() + name.size(), layer);
  if (error != std::errc{} || end == name.data() + name.size() || *end != '.') return std::nullopt;
  name.remove_prefix(static_cast<std::size_t>(end - name.data()) + 1);
  return LayerSiteName{layer, name};
}

}  // namespace plora::detail
