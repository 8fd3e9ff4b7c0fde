#pragma once
// What a ratio extraction produces (METHOD.md §2, step 4): per adaptable weight
// the ratio p_l, how the search ended, every evaluation it made, row and column
// importance scores and the extracted subnetwork (the top-scored rows and
// columns at p_l under the balanced sqrt split), plus the run's settings.
#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "plora/core/error.hpp"
#include "plora/core/rng.hpp"
#include "plora/masks/targeted.hpp"
#include "plora/sparsity/threshold_search.hpp"
#include "plora/train/metrics.hpp"

namespace plora {

/// One evaluation of the search: keep-fraction q asked for, the density the
/// extractor actually kept at q (SVD: k / rank), and the metric it scored.
struct Probe {
  double q = 1.0;
  double density = 1.0;
  double metric = 0.0;
};

/// The extraction result of one weight.
struct SiteRatio {
  std::string name;
  Index out_features = 0;
  Index in_features = 0;
  double ratio = 1.0;  ///< p_l in (0, 1]: the kept density at the q the search returned
  SearchOutcome::Kind outcome = SearchOutcome::NeverPasses;
  int evaluations = 0;
  std::vector<Probe> probes;        ///< every evaluation, in the order made
  std::vector<float> row_scores;    ///< importance per output row (length out_features)
  std::vector<float> col_scores;    ///< importance per input column (length in_features)
  std::vector<std::int32_t> top_rows;  ///< the extracted subnetwork: sorted kept rows ...
  std::vector<std::int32_t> top_cols;  ///< ... and columns (Targeted mask at `ratio`)
};

/// The extraction result of a model.
struct RatioReport {
  std::string extractor;  ///< "svd", "snip" or "imp"
  metrics::Metric metric = metrics::Metric::Accuracy;
  double tau = 0.9;
  double resolution = 1.0 / 64.0;
  double reference_metric = 0.0;  ///< M0, the unmodified model on the few-shot set
  std::uint64_t seed = 0;
  double seconds = 0.0;  ///< wall time of the extraction (not written to ratios.json)
  std::vector<SiteRatio> sites;

  /// The site called `name`; ValueError naming it if the report has none.
  [[nodiscard]] const SiteRatio& site(std::string_view name) const {
    const auto found = std::find_if(sites.begin(), sites.end(), [&](const SiteRatio& s) { return s.name == name; });
    check<ValueError>(found != sites.end(), "ratio report (", extractor, "): no site named '", name, "'");
    return *found;
  }

  /// Site name -> ratio, the shape `uniform_ratios` and the mask plans take.
  [[nodiscard]] std::map<std::string, double> ratios() const {
    std::map<std::string, double> out;
    for (const auto& s : sites) out.emplace(s.name, s.ratio);
    return out;
  }
};

/// Fills `site.top_rows` / `top_cols` with the top-scored rows and columns at
/// `site.ratio` under the balanced split (k = round(sqrt(p) n), the count the
/// random Partial mask keeps on average), so the report's subnetwork is exactly
/// what the Targeted mask policy would train.
inline void set_extracted_subnetwork(SiteRatio& site) {
  MaskRequest request;
  request.out = site.out_features;
  request.in = site.in_features;
  request.ratio = site.ratio;
  request.row_scores = site.row_scores;
  request.col_scores = site.col_scores;
  request.stream = stream_id(site.name);
  request.site = site.name;
  RowColMask mask = TargetedMask{}.sample(request);
  site.top_rows = std::move(mask.rows);
  site.top_cols = std::move(mask.cols);
}

}  // namespace plora
