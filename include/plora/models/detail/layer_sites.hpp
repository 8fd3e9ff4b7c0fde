#pragma once
// The adaptable sites of a stack of encoder layers and their layer-numbered
// names ("<prefix><layer>.<suffix>"), shared by both models. A layer lists
// its possible suffixes in Layer::kSites, says which it has with
// has_site(suffix) and hands them out with site(suffix).
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "plora/core/decimal.hpp"
#include "plora/core/error.hpp"
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
  const std::size_t dot = name.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  const std::optional<Index> layer = parse_index(name.substr(0, dot));
  if (!layer) return std::nullopt;
  return LayerSiteName{*layer, name.substr(dot + 1)};
}

/// f(site) for every site, layer by layer in Layer::kSites order.
template <class Layer, class F>
void for_each_layer_site(std::vector<Layer>& layers, F&& f) {
  for (auto& layer : layers)
    for (const auto suffix : Layer::kSites)
      if (layer.has_site(suffix)) f(layer.site(suffix));
}

/// The full names of every site, in for_each_layer_site's order.
template <class Layer>
std::vector<std::string> layer_site_names(const std::vector<Layer>& layers, std::string_view prefix) {
  std::vector<std::string> names;
  for (std::size_t l = 0; l < layers.size(); ++l)
    for (const auto suffix : Layer::kSites)
      if (layers[l].has_site(suffix))
        names.push_back(std::string(prefix) + std::to_string(l) + "." + std::string(suffix));
  return names;
}

/// Layer and suffix of the site called `name`; a ValueError naming `model`
/// and its sites for any other name.
template <class Layer>
LayerSiteName checked_layer_site_name(const std::vector<Layer>& layers, const std::string& name,
                                      std::string_view prefix, std::string_view model) {
  const auto parsed = parse_layer_site_name(name, prefix);
  const bool known = parsed && parsed->layer >= 0 && parsed->layer < static_cast<Index>(layers.size()) &&
                     layers[static_cast<std::size_t>(parsed->layer)].has_site(parsed->suffix);
  if (!known) {
    std::string suffixes;
    if (!layers.empty())
      for (const auto suffix : Layer::kSites)
        if (layers.front().has_site(suffix)) suffixes += (suffixes.empty() ? "" : ", ") + std::string(suffix);
    throw ValueError(detail::concat(model, " has no site '", name, "'; sites are ", prefix, "<0..",
                                    static_cast<Index>(layers.size()) - 1, ">.{", suffixes, "}"));
  }
  return *parsed;
}

/// The site called `name`; a ValueError naming `model` and its sites for any other name.
template <class Layer>
auto& find_layer_site(std::vector<Layer>& layers, const std::string& name, std::string_view prefix,
                      std::string_view model) {
  const LayerSiteName parsed = checked_layer_site_name(layers, name, prefix, model);
  return layers[static_cast<std::size_t>(parsed.layer)].site(parsed.suffix);
}

}  // namespace plora::detail
