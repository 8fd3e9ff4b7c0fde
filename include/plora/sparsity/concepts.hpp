#pragma once
// The RatioExtractor concept (METHOD.md §2). SVD, SNIP and IMP share the driver
// (extract.hpp: few-shot evaluation, the parallel loop over weights, the exact
// restore of each weight, the report) and the threshold search; they differ only
// in how they prune one weight, which is a WeightPruner:
//
//   WeightPruner<P, B>: built once per weight (SVD factorises W, SNIP scores
//   |W ⊙ dL/dW|, IMP ranks |W|), then
//     density(q)    the fraction of the weight actually kept at keep-fraction q
//     apply(out, q) writes the q-pruned weight (out x in) into `out`
//     scores(q)     row and column importance of the subnetwork kept at q
//
//   RatioExtractor<E, M>:
//     E::name                         "svd", "snip", "imp"
//     e.pruner(model, site, shots)    the site's WeightPruner, from the unmodified
//                                     weight (may run the model: SNIP's gradients)
//     e.search(metric, target, res)   the shared search over q: bisection on the
//                                     grid (SVD, SNIP) or IMP's geometric schedule
#include <concepts>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "plora/backend/concepts.hpp"
#include "plora/models/concepts.hpp"
#include "plora/sparsity/threshold_search.hpp"

namespace plora {

/// Importance of one weight's output rows and input columns.
struct SiteScores {
  std::vector<float> rows;
  std::vector<float> cols;
};

template <class P, class B>
concept WeightPruner = Backend<B> && requires(const P& p, View<typename B::Space> out, double q) {
  { p.density(q) } -> std::convertible_to<double>;
  p.apply(out, q);
  { p.scores(q) } -> std::same_as<SiteScores>;
};

template <class E, class M>
concept RatioExtractor =
    Model<M> && requires(const E& e, M& model, const std::string& site, std::span<const typename M::Batch> shots,
                         const std::function<double(double)>& metric, double target, double resolution) {
      { E::name } -> std::convertible_to<std::string_view>;
      { e.pruner(model, site, shots) } -> WeightPruner<typename M::BackendType>;
      { e.search(metric, target, resolution) } -> std::same_as<SearchOutcome>;
    };

}  // namespace plora
