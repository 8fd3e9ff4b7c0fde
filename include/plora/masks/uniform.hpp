#pragma once
// The uniform-ratio ablation (METHOD.md §3): every layer gets the same ratio,
// the mean of the derived per-layer ratios or a given value.
#include <map>
#include <optional>
#include <string>

#include "plora/masks/concepts.hpp"

namespace plora {

/// Every site of `ratios_by_site` mapped to `value` if given, else to the mean
/// of the ratios. Throws ValueError on an empty map or a ratio outside (0, 1].
inline std::map<std::string, double> uniform_ratios(const std::map<std::string, double>& ratios_by_site,
                                                    std::optional<double> value = std::nullopt) {
  check<ValueError>(!ratios_by_site.empty(), "uniform_ratios: no sites given");
  double sum = 0.0;
  for (const auto& [site, ratio] : ratios_by_site) {
    detail::check_ratio(ratio, site, "ratio");
    sum += ratio;
  }
  if (value) detail::check_ratio(*value, {}, "uniform ratio");
  const double uniform = value.value_or(sum / static_cast<double>(ratios_by_site.size()));
  std::map<std::string, double> out;
  for (const auto& entry : ratios_by_site) out.emplace(entry.first, uniform);
  return out;
}

}  // namespace plora
