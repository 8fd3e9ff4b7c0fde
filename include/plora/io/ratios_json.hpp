#pragma once
// ratios.json: an extraction's RatioReport as a file. The bytes depend only on
// the report's content (same seed, same model, same data -> identical file):
// fixed key order, one line per site, shortest round-trip numbers. Wall time
// is left out for that reason. Loading validates the file against the sites of
// the model it is meant for.
//
//   {
//     "format": "plora.ratios", "version": 1, "extractor": "svd", "metric": "accuracy",
//     "tau": 0.9, "resolution": 0.015625, "reference_metric": 0.95, "seed": 0,
//     "sites": [
//       {"name": "...query", "out_features": 768, "in_features": 768, "ratio": 0.25,
//        "outcome": "found", "evaluations": 8, "probes": [{"q": 1, "density": 1, "metric": 0.95}, ...],
//        "row_scores": [...], "col_scores": [...], "top_rows": [...], "top_cols": [...]},
//       ...
//     ]
//   }
#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "plora/core/error.hpp"
#include "plora/io/atomic_file.hpp"
#include "plora/io/detail/input_file.hpp"
#include "plora/models/sites.hpp"
#include "plora/sparsity/report.hpp"
#include "plora/train/metrics.hpp"

namespace plora::io {

inline constexpr std::string_view kRatiosFormat = "plora.ratios";
inline constexpr int kRatiosVersion = 1;

namespace detail {
/// The double nearest the float's shortest decimal form (0.1f -> 0.1), so the
/// file shows "0.1" rather than "0.10000000149011612" and reading it back as a
/// float gives the same float.
inline double shortest_float(float value) {
  char buffer[32];
  const auto end = std::to_chars(buffer, buffer + sizeof(buffer), value).ptr;
  double out = 0.0;
  std::from_chars(buffer, end, out);  // locale-independent, unlike strtod
  return out;
}

inline nlohmann::ordered_json float_array(const std::vector<float>& values) {
  auto out = nlohmann::ordered_json::array();
  for (const float v : values) out.push_back(shortest_float(v));
  return out;
}

inline nlohmann::ordered_json site_json(const SiteRatio& site) {
  nlohmann::ordered_json probes = nlohmann::ordered_json::array();
  for (const auto& p : site.probes) probes.push_back({{"q", p.q}, {"density", p.density}, {"metric", p.metric}});
  return {{"name", site.name},
          {"out_features", site.out_features},
          {"in_features", site.in_features},
          {"ratio", site.ratio},
          {"outcome", outcome_name(site.outcome)},
          {"evaluations", site.evaluations},
          {"probes", std::move(probes)},
          {"row_scores", float_array(site.row_scores)},
          {"col_scores", float_array(site.col_scores)},
          {"top_rows", site.top_rows},
          {"top_cols", site.top_cols}};
}

inline void check_indices(const std::vector<std::int32_t>& ids, Index bound, const std::string& what) {
  for (std::size_t i = 0; i < ids.size(); ++i)
    check<IoError>(ids[i] >= 0 && ids[i] < bound && (i == 0 || ids[i] > ids[i - 1]), what, ": entry ", i, " (",
                   ids[i], ") is not a sorted unique index in [0, ", bound, ")");
}

inline SiteRatio site_from_json(const nlohmann::json& j, const std::string& source) {
  SiteRatio site;
  site.name = j.at("name").get<std::string>();
  const std::string where = source + ", site '" + site.name + "'";
  site.out_features = j.at("out_features").get<Index>();
  site.in_features = j.at("in_features").get<Index>();
  check<IoError>(site.out_features > 0 && site.in_features > 0, where, ": shape ", site.out_features, " x ",
                 site.in_features, " must be positive");
  site.ratio = j.at("ratio").get<double>();
  check<ValueError>(site.ratio > 0.0 && site.ratio <= 1.0, where, ": ratio ", site.ratio, " is outside (0, 1]");
  try {
    site.outcome = parse_outcome(j.at("outcome").get<std::string>());
  } catch (const ValueError& e) {
    throw IoError(where + ": " + e.what());
  }
  site.evaluations = j.at("evaluations").get<int>();
  for (const auto& p : j.at("probes")) {
    const Probe probe{p.at("q").get<double>(), p.at("density").get<double>(), p.at("metric").get<double>()};
    check<IoError>(probe.q > 0.0 && probe.q <= 1.0 && probe.density >= 0.0 && probe.density <= 1.0 &&
                       std::isfinite(probe.metric),
                   where, ": probe ", p.dump(), " is not (q in (0, 1], density in [0, 1], a finite metric)");
    site.probes.push_back(probe);
  }
  // The search records every evaluation as a probe.
  check<IoError>(site.evaluations == static_cast<int>(site.probes.size()), where, ": evaluations ", site.evaluations,
                 " but ", site.probes.size(), " probes");
  site.row_scores = j.at("row_scores").get<std::vector<float>>();
  site.col_scores = j.at("col_scores").get<std::vector<float>>();
  check<IoError>(static_cast<Index>(site.row_scores.size()) == site.out_features &&
                     static_cast<Index>(site.col_scores.size()) == site.in_features,
                 where, ": expected ", site.out_features, " row and ", site.in_features, " column scores, got ",
                 site.row_scores.size(), " and ", site.col_scores.size());
  site.top_rows = j.at("top_rows").get<std::vector<std::int32_t>>();
  site.top_cols = j.at("top_cols").get<std::vector<std::int32_t>>();
  check_indices(site.top_rows, site.out_features, where + " top_rows");
  check_indices(site.top_cols, site.in_features, where + " top_cols");
  return site;
}
}  // namespace detail

/// The ratios.json text of `report` (ends with a newline).
inline std::string ratios_to_json(const RatioReport& report) {
  const nlohmann::ordered_json head = {{"format", kRatiosFormat},
                                       {"version", kRatiosVersion},
                                       {"extractor", report.extractor},
                                       {"metric", metrics::metric_name(report.metric)},
                                       {"tau", report.tau},
                                       {"resolution", report.resolution},
                                       {"reference_metric", report.reference_metric},
                                       {"seed", report.seed}};
  std::string text = head.dump(2);
  text.resize(text.size() - 2);  // drop "\n}" to append the sites one per line
  text += ",\n  \"sites\": [";
  for (std::size_t i = 0; i < report.sites.size(); ++i)
    text += (i == 0 ? "\n    " : ",\n    ") + detail::site_json(report.sites[i]).dump();
  text += report.sites.empty() ? "]\n}\n" : "\n  ]\n}\n";
  return text;
}

/// Parses ratios.json text; `source` names it in errors. IoError for malformed
/// content, ValueError for a ratio outside (0, 1] or an unknown metric.
inline RatioReport ratios_from_json(std::string_view text, const std::string& source) {
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    check<IoError>(j.is_object() && j.value("format", std::string()) == kRatiosFormat, source,
                   ": not a plora ratios file (\"format\" must be \"", kRatiosFormat, "\")");
    const auto& version = j.at("version");
    check<IoError>(version.is_number_integer() && version.get<std::int64_t>() == kRatiosVersion, source,
                   ": ratios file version ", version.dump(), " is not supported (expected ", kRatiosVersion, ")");
    RatioReport report;
    report.extractor = j.at("extractor").get<std::string>();
    check<ValueError>(report.extractor == "svd" || report.extractor == "snip" || report.extractor == "imp", source,
                      ": extractor '", report.extractor, "' is not svd, snip or imp");
    try {
      report.metric = metrics::parse_metric(j.at("metric").get<std::string>());
    } catch (const ValueError& e) {
      throw ValueError(source + ": " + e.what());
    }
    report.tau = j.at("tau").get<double>();
    check<ValueError>(report.tau > 0.0 && report.tau <= 1.0, source, ": tau ", report.tau, " is outside (0, 1]");
    report.resolution = j.at("resolution").get<double>();
    in_context<ValueError>(source, [&] { validate_resolution(report.resolution); });
    report.reference_metric = j.at("reference_metric").get<double>();
    check<ValueError>(std::isfinite(report.reference_metric), source, ": reference_metric is not finite");
    check<IoError>(j.at("seed").is_number_unsigned(), source, ": seed ", j.at("seed").dump(),
                   " is not a non-negative integer");
    report.seed = j.at("seed").get<std::uint64_t>();
    std::set<std::string> seen;
    for (const auto& s : j.at("sites")) {
      report.sites.push_back(detail::site_from_json(s, source));
      check<IoError>(seen.insert(report.sites.back().name).second, source, ": site '", report.sites.back().name,
                     "' appears twice");
    }
    return report;
  } catch (const nlohmann::json::exception& e) {
    throw IoError(plora::detail::concat(source, ": malformed ratios file: ", e.what()));
  }
}

/// Throws ValueError naming the first site of `report` that `sites` (a
/// model's site_shapes()) lacks, or whose weight there has another shape.
inline void check_sites_known(const RatioReport& report, const std::vector<SiteShape>& sites,
                              const std::string& source) {
  for (const auto& site : report.sites) {
    const auto known = std::find_if(sites.begin(), sites.end(), [&](const SiteShape& s) { return s.name == site.name; });
    check<ValueError>(known != sites.end(), source, ": site '", site.name,
                      "' is not an adaptable site of this model (ratios from a different model?)");
    check<ValueError>(known->out_features == site.out_features && known->in_features == site.in_features, source,
                      ": site '", site.name, "' is ", site.out_features, " x ", site.in_features,
                      " in the file but ", known->out_features, " x ", known->in_features,
                      " in this model (ratios from a different model?)");
  }
}

/// Writes `report` to `path` atomically.
inline void save_ratios(const std::filesystem::path& path, const RatioReport& report) {
  write_file_atomically(path, ratios_to_json(report));
}

/// Reads `path` and checks every site against `sites` (the model's
/// site_shapes()). IoError for an unreadable or malformed file; ValueError for
/// a ratio outside (0, 1] or a site the model does not have in that shape.
inline RatioReport load_ratios(const std::filesystem::path& path, const std::vector<SiteShape>& sites) {
  const std::string text = detail::read_file(path, "ratios file");
  RatioReport report = ratios_from_json(text, "'" + path.string() + "'");
  check_sites_known(report, sites, "'" + path.string() + "'");
  return report;
}

}  // namespace plora::io
