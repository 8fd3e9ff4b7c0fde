#pragma once
// Unstructured pruning of one weight by per-entry scores, shared by SNIP
// (|W ⊙ dL/dW|) and IMP (|W|): keep-fraction q keeps the ceil(q * entries)
// top-scored entries and zeroes the rest.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/core/host_matrix.hpp"
#include "plora/sparsity/concepts.hpp"
#include "plora/sparsity/threshold_search.hpp"

namespace plora {

/// Keeps the top-scored entries of one weight. The ranking is computed once
/// (ties: the lower row-major index first, so results never depend on sort
/// internals); each q then takes a prefix of it.
/// @tparam B  backend
template <Backend B>
class EntryPruner {
 public:
  /// @param weight (out x in) the unmodified weight  @param scores (out x in) importance per entry
  /// @param site names the weight in error messages
  EntryPruner(HostMatrix weight, HostMatrix scores, const std::string& site)
      : weight_(std::move(weight)), scores_(std::move(scores)), order_(static_cast<std::size_t>(weight_.size())) {
    require_shape(scores_.view(), weight_.rows(), weight_.cols(), site + ": entry scores");
    check<ValueError>(weight_.size() > 0, site, ": cannot prune an empty weight");
    const auto& s = scores_.values();
    for (std::size_t i = 0; i < s.size(); ++i)
      check<NumericError>(std::isfinite(s[i]), site, ": importance score of entry ", i, " is ", s[i]);
    std::iota(order_.begin(), order_.end(), std::int64_t{0});
    std::sort(order_.begin(), order_.end(), [&](std::int64_t a, std::int64_t b) {
      const float sa = s[static_cast<std::size_t>(a)], sb = s[static_cast<std::size_t>(b)];
      return sa > sb || (sa == sb && a < b);
    });
  }

  [[nodiscard]] Index entries() const { return weight_.size(); }
  [[nodiscard]] Index kept_entries(double q) const { return ceil_count(q, entries()); }
  [[nodiscard]] double density(double q) const {
    return static_cast<double>(kept_entries(q)) / static_cast<double>(entries());
  }
  [[nodiscard]] const HostMatrix& entry_scores() const { return scores_; }

  /// The q-pruned weight on the host: kept entries as in W, the rest 0.
  [[nodiscard]] HostMatrix pruned(double q) const {
    HostMatrix out(weight_.rows(), weight_.cols());
    for_each_kept(q, [&](std::size_t i) { out.values()[i] = weight_.values()[i]; });
    return out;
  }

  void apply(View<typename B::Space> out, double q) const { B::upload(out, pruned(q).view()); }

  /// Row and column sums of the scores of the entries kept at q.
  [[nodiscard]] SiteScores scores(double q) const {
    const auto cols = static_cast<std::size_t>(weight_.cols());
    std::vector<double> rows(static_cast<std::size_t>(weight_.rows()), 0.0), columns(cols, 0.0);
    for_each_kept(q, [&](std::size_t i) {
      rows[i / cols] += scores_.values()[i];
      columns[i % cols] += scores_.values()[i];
    });
    return {std::vector<float>(rows.begin(), rows.end()), std::vector<float>(columns.begin(), columns.end())};
  }

 private:
  template <class F>
  void for_each_kept(double q, F&& body) const {
    const auto kept = static_cast<std::size_t>(kept_entries(q));
    for (std::size_t k = 0; k < kept; ++k) body(static_cast<std::size_t>(order_[k]));
  }

  HostMatrix weight_;
  HostMatrix scores_;
  std::vector<std::int64_t> order_;  // entry indices, most important first
};

}  // namespace plora
