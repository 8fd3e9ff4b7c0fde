#pragma once
// Small pieces of the runners' reporting: peak memory, JSON files written
// atomically, and the per-site ratio heatmap built from PEFT-style site names
// ("<...>.layer.<i>.<kind>"), which works for any encoder model.
#include <sys/resource.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <filesystem>
#include <map>
#include <iomanip>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/svg.hpp"
#include "plora/core/decimal.hpp"
#include "plora/core/view.hpp"
#include "plora/io/atomic_file.hpp"

namespace plora::runner {

/// Peak resident set size of this process in MiB (getrusage; Linux reports KiB).
inline double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

/// `value` with `digits` significant digits (or fixed decimals when `fixed`),
/// independent of the stream state that the progress bar leaves behind.
inline std::string format_number(double value, int digits = 4, bool fixed = false) {
  std::ostringstream out;
  if (fixed) out << std::fixed;
  out << std::setprecision(digits) << value;
  return out.str();
}

/// A float as the double its shortest decimal form reads as, so that JSON
/// shows 0.88 for 0.88f, not 0.8799999952316284.
inline double shortest_double(float value) {
  char text[32];
  const auto written = std::to_chars(text, text + sizeof text, value);
  double out = 0.0;
  std::from_chars(text, written.ptr, out);
  return out;
}

/// Writes `json` (pretty-printed, newline-terminated) to `path` atomically.
inline void write_json(const std::filesystem::path& path, const nlohmann::ordered_json& json) {
  io::write_file_atomically(path, json.dump(2) + "\n");
}

/// (layer index, site kind) of "<prefix>.layer.<i>.<kind>", or nullopt for
/// a name without a layer index.
inline std::optional<std::pair<Index, std::string>> split_layer_site(std::string_view name) {
  constexpr std::string_view marker = "layer.";
  for (std::size_t at = name.find(marker); at != std::string_view::npos; at = name.find(marker, at + 1)) {
    if (at > 0 && name[at - 1] != '.') continue;
    const std::string_view rest = name.substr(at + marker.size());
    const std::size_t dot = rest.find('.');
    if (dot == std::string_view::npos) continue;
    if (const std::optional<Index> layer = plora::detail::parse_index(rest.substr(0, dot)))
      return std::pair{*layer, std::string(rest.substr(dot + 1))};
  }
  return std::nullopt;
}

/// Heatmap SVG of `ratios` (site name -> ratio): one row per layer, one
/// column per site kind, kinds shortened by their common leading components
/// ("attention.attention.query" / "...value" -> "query" / "value").
inline std::string ratio_heatmap_svg(const std::string& title, const std::map<std::string, double>& ratios) {
  std::map<Index, std::map<std::string, double>> grid;
  std::vector<std::string> kinds;
  for (const auto& [name, ratio] : ratios) {
    auto parsed = split_layer_site(name);
    const auto [layer, kind] = parsed.value_or(std::pair<Index, std::string>{0, name});
    grid[layer][kind] = ratio;
    if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) kinds.push_back(kind);
  }
  // Drop the dot-separated components every kind starts with; a single kind keeps its last one.
  std::size_t common = kinds.size() == 1 ? kinds.front().rfind('.') + 1 : 0;  // npos + 1 == 0
  for (bool more = kinds.size() > 1; more;) {
    const std::size_t dot = kinds.front().find('.', common);
    const std::string_view head = std::string_view(kinds.front()).substr(0, dot + 1);
    more = dot != std::string::npos && std::all_of(kinds.begin(), kinds.end(), [&](const std::string& k) {
             return k.size() > head.size() && k.starts_with(head);
           });
    if (more) common = dot + 1;
  }
  std::vector<std::string> rows, cols;
  for (const auto& k : kinds) cols.push_back(k.substr(common));
  std::vector<std::vector<double>> values;
  for (const auto& [layer, cells] : grid) {
    rows.push_back("layer " + std::to_string(layer));
    values.emplace_back();
    for (const auto& k : kinds) {
      const auto found = cells.find(k);
      values.back().push_back(found == cells.end() ? -1.0 : found->second);
    }
  }
  return heatmap_svg(title, rows, cols, values);
}

}  // namespace plora::runner
