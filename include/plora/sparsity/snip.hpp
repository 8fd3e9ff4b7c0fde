#pragma once
// The SNIP extractor (gradient-based, METHOD.md §2; Lee et al., ICLR 2019):
// each entry of W is scored by |W ⊙ dL/dW| on the few-shot batches and
// keep-fraction q keeps the top ceil(q * entries) of them. The gradient of a
// weight is computed on the replica that extracts it, one backward pass over the
// few-shot set per weight, so weights stay independent and parallel.
#include <cmath>
#include <span>
#include <string>
#include <string_view>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/models/concepts.hpp"
#include "plora/sparsity/detail/scope_exit.hpp"
#include "plora/sparsity/entry_pruner.hpp"
#include "plora/sparsity/threshold_search.hpp"

namespace plora {

/// |W ⊙ dL/dW| of site `site_name` (out x in), dL/dW summed over the batches of
/// `shots` (each batch's mean loss), in eval mode. The site's dL/dW is switched
/// off again and the model's parameter gradients are zeroed before returning.
/// Throws ValueError if dL/dW is all zero: the backward pass never reached the
/// site, and every ranking of the entries would be arbitrary.
template <Model M>
HostMatrix snip_scores(M& model, const std::string& site_name, std::span<const typename M::Batch> shots) {
  using B = typename M::BackendType;
  check<ValueError>(!shots.empty(), site_name, ": SNIP needs at least one few-shot batch");
  auto& site = model.site(site_name);
  const detail::ScopeExit grad_off([&] { site.enable_weight_grad(false); });
  model.set_training(false);
  site.enable_weight_grad(true);
  B::fill(site.weight_grad()->view(), 0.0f);
  for (std::size_t i = 0; i < shots.size(); ++i) {
    const float loss = model.forward_backward(shots[i]);
    check<NumericError>(std::isfinite(loss), site_name, ": SNIP loss of few-shot batch ", i, " is ", loss);
  }
  model.zero_grad();
  const HostMatrix grad = to_host<B>(site.weight_grad()->view());
  check<ValueError>(B::sum_squares(site.weight_grad()->view()) > 0.0, site_name,
                    ": dL/dW is all zero on the few-shot set; SNIP needs the model's backward pass to reach this "
                    "site (with enable_weight_grad) and a head that passes gradient");
  HostMatrix scores = to_host<B>(site.weight());
  for (std::size_t i = 0; i < scores.values().size(); ++i)
    scores.values()[i] = std::abs(scores.values()[i] * grad.values()[i]);
  return scores;
}

/// The SNIP ratio extractor: bisection over the q grid on |W ⊙ dL/dW|.
struct Snip {
  static constexpr std::string_view name = "snip";

  template <Model M>
  [[nodiscard]] EntryPruner<typename M::BackendType> pruner(M& model, const std::string& site,
                                                            std::span<const typename M::Batch> shots) const {
    HostMatrix scores = snip_scores(model, site, shots);
    return {to_host<typename M::BackendType>(model.site(site).weight()), std::move(scores), site};
  }

  template <class Metric>
  [[nodiscard]] SearchOutcome search(Metric&& metric, double target, double resolution) const {
    return bisect_threshold(std::forward<Metric>(metric), target, resolution);
  }
};

}  // namespace plora
