#pragma once
// Scoring a model on the few-shot set: forward every batch in eval mode (or
// run any pass that gives its logits), bring the logits to the host and apply
// the task metric to all of them at once.
#include <concepts>
#include <cstdint>
#include <span>
#include <vector>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/core/host_matrix.hpp"
#include "plora/models/concepts.hpp"
#include "plora/train/concepts.hpp"
#include "plora/train/metrics.hpp"

namespace plora {

/// The batches of epoch 0 of `few_shot`, fetched once so that every evaluation
/// of the search sees exactly the same examples. Throws ValueError when the set
/// is empty (zero shots).
template <BatchSource S>
std::vector<typename S::Batch> few_shot_batches(const S& few_shot) {
  const Index count = few_shot.batches_per_epoch();
  check<ValueError>(count > 0, "the few-shot set has no batches (zero shots per class?)");
  std::vector<typename S::Batch> out;
  out.reserve(static_cast<std::size_t>(count));
  for (Index i = 0; i < count; ++i) {
    out.push_back(few_shot.batch(0, i));
    if constexpr (requires { out.back().size(); })
      check<ValueError>(out.back().size() > 0, "few-shot batch ", i, " holds no examples");
  }
  return out;
}

/// `metric` over all of `batches`, batch i's logits (rows, classes) from
/// `logits_of(i)` in backend B's memory. A batch supplies `labels` (class
/// ids) and, for Pearson / Spearman, `targets` when it has them.
template <Backend B, class Batch, class LogitsOf>
double evaluate_outputs(std::span<const Batch> batches, metrics::Metric metric, LogitsOf&& logits_of) {
  check<ValueError>(!batches.empty(), "metric evaluation: no batches to evaluate");
  std::vector<float> outputs;
  std::vector<std::int32_t> labels;
  std::vector<float> targets;
  Index rows = 0, cols = 0;
  for (std::size_t i = 0; i < batches.size(); ++i) {
    const auto& batch = batches[i];
    const HostMatrix logits = to_host<B>(ConstView<typename B::Space>(logits_of(i)));
    check<ShapeError>(i == 0 || logits.cols() == cols, "metric evaluation: batch ", i, " gave ", logits.cols(),
                      " output columns, earlier batches ", cols);
    cols = logits.cols();
    rows += logits.rows();
    outputs.insert(outputs.end(), logits.values().begin(), logits.values().end());
    labels.insert(labels.end(), batch.labels.begin(), batch.labels.end());
    if constexpr (requires { batch.targets; }) targets.insert(targets.end(), batch.targets.begin(), batch.targets.end());
  }
  const HostMatrix all(rows, cols, std::move(outputs));
  return metrics::score(metric, all.view(), labels, targets);
}

/// `metric` of `model` (in eval mode) over all of `batches`.
template <Model M>
double evaluate_metric(M& model, std::span<const typename M::Batch> batches, metrics::Metric metric) {
  model.set_training(false);
  return evaluate_outputs<typename M::BackendType>(batches, metric,
                                                   [&](std::size_t i) { return model.forward(batches[i]); });
}

}  // namespace plora
