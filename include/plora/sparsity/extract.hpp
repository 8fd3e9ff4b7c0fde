#pragma once
// The ratio-extraction driver every RatioExtractor shares (METHOD.md §2):
// measure M0 on the few-shot set, then for every adaptable weight separately
// replace only that weight by its q-pruned versions, find the smallest q with
// metric >= tau * M0, restore the weight exactly and record ratio and scores.
//
// A LayeredModel's probes of a weight in layer l rerun layers l.. only, from
// that layer's inputs computed once per layer (about half the layer passes of
// whole forwards, the same results).
//
// Parallelism: weights are independent, but one model instance cannot run two
// forward passes at once, so `threads` > 1 works on one copy of the model per
// extra thread (M must then be copy-constructible with value semantics: a copy
// owns its weights). Each weight's result depends only on that weight and the
// unmodified model, and lands at the weight's own index, so the report is the
// same for every thread count.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/models/concepts.hpp"
#include "plora/sparsity/concepts.hpp"
#include "plora/sparsity/detail/scope_exit.hpp"
#include "plora/sparsity/evaluate.hpp"
#include "plora/sparsity/report.hpp"
#include "plora/sparsity/threshold_search.hpp"
#include "plora/train/concepts.hpp"
#include "plora/train/metrics.hpp"

namespace plora {

struct ExtractionConfig {
  double tau = 0.9;                 ///< keep metric >= tau * M0, tau in (0, 1]
  double resolution = 1.0 / 64.0;   ///< grid step of q, in (0, 1); IMP's smallest density
  metrics::Metric metric = metrics::Metric::Accuracy;
  int threads = 1;                  ///< model replicas working at once; 0 = hardware threads
  std::uint64_t seed = 0;           ///< recorded in the report; the default seed of masks planned from it
  std::vector<std::string> targets;  ///< PEFT target_modules (full name or "." suffix); empty = every site
};

/// Site names matching `targets` the way PEFT's target_modules do (the name
/// equals a target or ends with "." + target), in model order; every site when
/// `targets` is empty. ValueError for a target that matches no site.
inline std::vector<std::string> select_sites(const std::vector<std::string>& site_names,
                                             const std::vector<std::string>& targets) {
  if (targets.empty()) return site_names;
  const auto matches = [](const std::string& name, const std::string& target) {
    return name == target ||
           (name.size() > target.size() && name.ends_with(target) && name[name.size() - target.size() - 1] == '.');
  };
  for (const auto& target : targets)
    check<ValueError>(std::any_of(site_names.begin(), site_names.end(),
                                  [&](const std::string& name) { return matches(name, target); }),
                      "extraction target '", target, "' matches no adaptable site of the model");
  std::vector<std::string> out;
  for (const auto& name : site_names)
    if (std::any_of(targets.begin(), targets.end(), [&](const std::string& t) { return matches(name, t); }))
      out.push_back(name);
  return out;
}

namespace detail {

/// The number of model instances for_each_on_replicas works on.
inline std::size_t replica_count(std::size_t count, int threads) {
  return std::min<std::size_t>(count, static_cast<std::size_t>(std::max(threads, 1)));
}

/// Calls work(replica, r, i) for i in [0, count) on replica_count(count,
/// threads) model instances r: `model` itself (r = 0) and copies of it. The
/// first failure stops the remaining work and is rethrown here.
template <Model M, class Work>
void for_each_on_replicas(M& model, std::size_t count, int threads, Work&& work) {
  const std::size_t workers = replica_count(count, threads);
  if (workers <= 1) {
    for (std::size_t i = 0; i < count; ++i) work(model, std::size_t{0}, i);
    return;
  }
  if constexpr (std::copy_constructible<M>) {
    std::vector<M> replicas(workers - 1, model);
    std::atomic<std::size_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex error_mutex;
    std::exception_ptr error;
    std::size_t error_index = std::numeric_limits<std::size_t>::max();
    const auto run = [&](M& replica, std::size_t r) {
      for (std::size_t i = next++; i < count && !failed; i = next++) {
        try {
          work(replica, r, i);
        } catch (...) {
          const std::lock_guard lock(error_mutex);
          if (i < error_index) {
            error = std::current_exception();
            error_index = i;
          }
          failed = true;
        }
      }
    };
    {
      std::vector<std::jthread> pool;
      for (std::size_t r = 0; r < replicas.size(); ++r) pool.emplace_back(run, std::ref(replicas[r]), r + 1);
      run(model, 0);
    }
    if (error) std::rethrow_exception(error);
  } else {
    throw ValueError(concat("ratio extraction with threads = ", threads,
                            " needs a copy-constructible model (one copy per thread); use threads = 1"));
  }
}

/// The input of one encoder layer for every few-shot batch under the
/// unmodified weights, kept by a model replica across the sites of that
/// layer: pruning a weight of layer l changes nothing below it, so a
/// LayeredModel's probes rerun layers l.. only, with the same float
/// operations (and results) as whole forwards.
template <Model M>
struct LayerInputs {
  Index layer = -1;
  std::vector<typename M::BackendType::Matrix> inputs;
};

/// The few-shot metric of `model` as the weights of site `name` now are.
template <Model M>
double probe_metric(M& model, const std::string& name, std::span<const typename M::Batch> shots,
                    metrics::Metric metric, const LayerInputs<M>& cache) {
  if constexpr (LayeredModel<M>) {
    model.set_training(false);
    const Index layer = model.layer_of(name);
    return evaluate_outputs<typename M::BackendType>(
        shots, metric, [&](std::size_t i) { return model.forward_from(layer, cache.inputs[i].view(), shots[i]); });
  } else {
    return evaluate_metric(model, shots, metric);
  }
}

/// Fills `cache` with the inputs of the layer holding site `name`, unless it
/// holds them already; a no-op for models that are not LayeredModels.
template <Model M>
void cache_layer_inputs(M& model, const std::string& name, std::span<const typename M::Batch> shots,
                        LayerInputs<M>& cache) {
  if constexpr (LayeredModel<M>) {
    using B = typename M::BackendType;
    const Index layer = model.layer_of(name);
    if (cache.layer == layer) return;
    cache.layer = -1;
    cache.inputs.clear();
    model.set_training(false);
    for (const auto& batch : shots) {
      (void)model.forward(batch);
      const ConstView<typename B::Space> input = model.hidden_state(layer);
      cache.inputs.emplace_back(input.rows, input.cols);
      B::copy(cache.inputs.back().view(), input);
    }
    cache.layer = layer;
  }
}

/// Extracts the ratio of one site of `model` (METHOD.md §2, step 3). The
/// weight is restored bit-exactly afterwards, also when an evaluation throws.
template <class E, Model M>
SiteRatio extract_site(const E& extractor, M& model, const std::string& name,
                       std::span<const typename M::Batch> shots, const ExtractionConfig& config, double target,
                       LayerInputs<M>& cache) {
  using B = typename M::BackendType;
  cache_layer_inputs(model, name, shots, cache);  // before any weight of the layer changes
  auto& site = model.site(name);
  const ConstView<typename B::Space> weight = site.weight();
  typename B::Matrix original(weight.rows, weight.cols);
  B::copy(original.view(), weight);
  const ScopeExit restore([&] { B::copy(site.mutable_weight(), original.view()); });

  const auto pruner = extractor.pruner(model, name, shots);
  SiteRatio result;
  result.name = name;
  result.out_features = weight.rows;
  result.in_features = weight.cols;
  const auto metric = [&](double q) {
    pruner.apply(site.mutable_weight(), q);
    const double value = probe_metric(model, name, shots, config.metric, cache);
    result.probes.push_back({q, pruner.density(q), value});
    return value;
  };
  const SearchOutcome outcome = extractor.search(metric, target, config.resolution);
  result.ratio = pruner.density(outcome.ratio);
  result.outcome = outcome.kind;
  result.evaluations = outcome.evaluations;
  SiteScores scores = pruner.scores(outcome.ratio);
  result.row_scores = std::move(scores.rows);
  result.col_scores = std::move(scores.cols);
  set_extracted_subnetwork(result);
  return result;
}

}  // namespace detail

/// Per-site ratios of `model` on the few-shot set (METHOD.md §2). The model's
/// head should already be fitted (fit_linear_probe) unless it is zero-shot.
/// Throws ValueError for tau outside (0, 1], a resolution outside (0, 1), an
/// empty few-shot set, unknown targets or a reference metric M0 <= 0 (the
/// threshold tau * M0 would then pass a broken model). `model` is unchanged
/// afterwards (each weight restored exactly), apart from its cached activations.
/// @tparam E  a RatioExtractor (Svd, Snip, Imp)
/// @tparam M  a Model; copy-constructible when config.threads != 1
/// @tparam S  a BatchSource of M's batches: the few-shot set
template <class E, Model M, BatchSource S>
  requires RatioExtractor<E, M> && std::same_as<typename S::Batch, typename M::Batch>
RatioReport extract_ratios(const E& extractor, M& model, const S& few_shot, const ExtractionConfig& config) {
  validate_tau(config.tau);
  validate_resolution(config.resolution);
  check<ValueError>(config.threads >= 0, "ratio extraction: threads must be >= 0 (0 = hardware threads), got ",
                    config.threads);
  const auto start = std::chrono::steady_clock::now();
  const auto shots = few_shot_batches(few_shot);
  const std::vector<std::string> sites = select_sites(model.site_names(), config.targets);

  RatioReport report;
  report.extractor = std::string(E::name);
  report.metric = config.metric;
  report.tau = config.tau;
  report.resolution = config.resolution;
  report.seed = config.seed;
  report.reference_metric = evaluate_metric(model, std::span(shots), config.metric);
  check<ValueError>(report.reference_metric > 0.0, "ratio extraction: the unmodified model scores ",
                    metrics::metric_name(config.metric), " = ", report.reference_metric,
                    " on the few-shot set; tau * M0 needs M0 > 0 (fit the head first with fit_linear_probe)");
  const double target = config.tau * report.reference_metric;

  const int threads = config.threads == 0 ? static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))
                                          : config.threads;
  report.sites.resize(sites.size());
  std::vector<detail::LayerInputs<M>> layer_inputs(detail::replica_count(sites.size(), threads));
  detail::for_each_on_replicas(model, sites.size(), threads, [&](M& replica, std::size_t r, std::size_t i) {
    report.sites[i] =
        detail::extract_site(extractor, replica, sites[i], std::span(shots), config, target, layer_inputs[r]);
  });
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace plora
