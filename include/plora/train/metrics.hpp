#pragma once
// Task metrics, computed on the host in double: accuracy, macro / binary F1,
// Matthews correlation (multi-class form, as sklearn), Pearson and Spearman
// correlation (GLUE STS-B). Every metric is "higher is better", which the
// ratio search (METHOD.md §2) relies on. Degenerate inputs that make a
// correlation undefined (a constant prediction, or a NaN or Inf in either
// input) score 0, as sklearn's MCC does, so a pruned model that collapses to
// one answer or diverges simply fails the threshold instead of aborting the
// search.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "plora/core/error.hpp"
#include "plora/core/finite.hpp"
#include "plora/core/view.hpp"

namespace plora::metrics {

enum class Metric { Accuracy, MacroF1, BinaryF1, Mcc, Pearson, Spearman };

/// Canonical name: "accuracy", "macro_f1", "f1", "mcc", "pearson", "spearman".
inline std::string metric_name(Metric metric) {
  switch (metric) {
    case Metric::Accuracy: return "accuracy";
    case Metric::MacroF1: return "macro_f1";
    case Metric::BinaryF1: return "f1";
    case Metric::Mcc: return "mcc";
    case Metric::Pearson: return "pearson";
    case Metric::Spearman: return "spearman";
  }
  return "unknown";
}

/// Parses a metric name (case-insensitive). Accepts the canonical names and
/// the aliases "acc", "binary_f1", "matthews", "matthews_corrcoef", "spearmanr".
inline Metric parse_metric(std::string_view text) {
  std::string name(text);
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  if (name == "accuracy" || name == "acc") return Metric::Accuracy;
  if (name == "macro_f1") return Metric::MacroF1;
  if (name == "f1" || name == "binary_f1") return Metric::BinaryF1;
  if (name == "mcc" || name == "matthews" || name == "matthews_corrcoef") return Metric::Mcc;
  if (name == "pearson") return Metric::Pearson;
  if (name == "spearman" || name == "spearmanr") return Metric::Spearman;
  throw ValueError(plora::detail::concat("unknown metric '", text,
                                  "'; expected one of accuracy, macro_f1, f1, mcc, pearson, spearman"));
}

/// Whether the metric scores real-valued outputs (regression) rather than class ids.
inline bool is_regression(Metric metric) { return metric == Metric::Pearson || metric == Metric::Spearman; }

namespace detail {
template <class T, class U>
void check_pair(std::span<const T> a, std::span<const U> b, const char* what) {
  check<ValueError>(!a.empty(), what, ": empty input");
  check<ValueError>(a.size() == b.size(), what, ": ", a.size(), " predictions but ", b.size(), " labels");
}

/// Pearson correlation in double; 0 when either side is constant.
inline double pearson_double(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = static_cast<double>(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n;
  const double my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0.0, sxx = 0.0, syy = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (sxx == 0.0 || syy == 0.0) return 0.0;
  return sxy / std::sqrt(sxx * syy);
}

/// 1-based ranks, ties sharing their average rank (scipy.stats.rankdata "average").
inline std::vector<double> average_ranks(std::span<const float> values) {
  std::vector<std::size_t> order(values.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return values[a] < values[b]; });
  std::vector<double> ranks(values.size());
  for (std::size_t first = 0; first < order.size();) {
    std::size_t last = first;
    while (last + 1 < order.size() && values[order[last + 1]] == values[order[first]]) ++last;
    const double rank = 0.5 * static_cast<double>(first + last) + 1.0;
    for (std::size_t k = first; k <= last; ++k) ranks[order[k]] = rank;
    first = last + 1;
  }
  return ranks;
}

inline double f1_from_counts(double tp, double fp, double fn) {
  // Precision and recall undefined (no predicted and no true positives) -> 0, as sklearn.
  const double denom = 2.0 * tp + fp + fn;
  return denom == 0.0 ? 0.0 : 2.0 * tp / denom;
}
}  // namespace detail

/// Fraction of predictions equal to their label.
inline double accuracy(std::span<const std::int32_t> predictions, std::span<const std::int32_t> labels) {
  detail::check_pair(predictions, labels, "accuracy");
  std::size_t hits = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) hits += predictions[i] == labels[i] ? 1 : 0;
  return static_cast<double>(hits) / static_cast<double>(labels.size());
}

/// F1 of the positive class 1 (GLUE MRPC / QQP); labels and predictions must be 0 or 1.
inline double binary_f1(std::span<const std::int32_t> predictions, std::span<const std::int32_t> labels) {
  detail::check_pair(predictions, labels, "binary_f1");
  double tp = 0, fp = 0, fn = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    check<ValueError>((labels[i] == 0 || labels[i] == 1) && (predictions[i] == 0 || predictions[i] == 1),
                      "binary_f1: entry ", i, " has label ", labels[i], " and prediction ", predictions[i],
                      "; both must be 0 or 1");
    tp += (predictions[i] == 1 && labels[i] == 1) ? 1 : 0;
    fp += (predictions[i] == 1 && labels[i] == 0) ? 1 : 0;
    fn += (predictions[i] == 0 && labels[i] == 1) ? 1 : 0;
  }
  return detail::f1_from_counts(tp, fp, fn);
}

/// Unweighted mean of per-class F1 over the classes that occur in labels or
/// predictions (sklearn's average="macro" default); ids must lie in [0, num_classes).
inline double macro_f1(std::span<const std::int32_t> predictions, std::span<const std::int32_t> labels,
                       Index num_classes) {
  detail::check_pair(predictions, labels, "macro_f1");
  check<ValueError>(num_classes >= 1, "macro_f1: num_classes must be >= 1, got ", num_classes);
  const auto k = static_cast<std::size_t>(num_classes);
  std::vector<double> tp(k, 0.0), fp(k, 0.0), fn(k, 0.0);
  std::vector<bool> present(k, false);
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const std::int32_t p = predictions[i], l = labels[i];
    check<ValueError>(p >= 0 && p < num_classes && l >= 0 && l < num_classes, "macro_f1: entry ", i, " has label ", l,
                      " and prediction ", p, "; both must lie in [0, ", num_classes, ")");
    present[std::size_t(p)] = present[std::size_t(l)] = true;
    if (p == l) {
      tp[std::size_t(l)] += 1;
    } else {
      fp[std::size_t(p)] += 1;
      fn[std::size_t(l)] += 1;
    }
  }
  double total = 0.0;
  std::size_t classes = 0;
  for (std::size_t c = 0; c < k; ++c) {
    if (!present[c]) continue;
    total += detail::f1_from_counts(tp[c], fp[c], fn[c]);
    ++classes;
  }
  return total / static_cast<double>(classes);
}

/// Matthews correlation coefficient, general K-class form (Gorodkin 2004, as
/// sklearn.metrics.matthews_corrcoef); 0 when undefined (one class only).
inline double matthews_corrcoef(std::span<const std::int32_t> predictions, std::span<const std::int32_t> labels) {
  detail::check_pair(predictions, labels, "matthews_corrcoef");
  std::map<std::int32_t, double> true_count, pred_count;
  double correct = 0.0;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    true_count[labels[i]] += 1;
    pred_count[predictions[i]] += 1;
    correct += predictions[i] == labels[i] ? 1 : 0;
  }
  const double s = static_cast<double>(labels.size());
  double pt = 0.0, pp = 0.0, tt = 0.0;
  for (const auto& [cls, t] : true_count) {
    tt += t * t;
    const auto it = pred_count.find(cls);
    if (it != pred_count.end()) pt += it->second * t;
  }
  for (const auto& [cls, p] : pred_count) pp += p * p;
  const double denom = std::sqrt((s * s - pp) * (s * s - tt));
  return denom == 0.0 ? 0.0 : (correct * s - pt) / denom;
}

/// Pearson correlation of x and y; 0 when either is constant or not finite.
inline double pearson(std::span<const float> x, std::span<const float> y) {
  detail::check_pair(x, y, "pearson");
  if (first_non_finite(x) < x.size() || first_non_finite(y) < y.size()) return 0.0;
  return detail::pearson_double(std::vector<double>(x.begin(), x.end()), std::vector<double>(y.begin(), y.end()));
}

/// Spearman rank correlation (Pearson of average ranks, ties averaged as
/// scipy); 0 when either side is constant or not finite (NaN has no rank).
inline double spearman(std::span<const float> x, std::span<const float> y) {
  detail::check_pair(x, y, "spearman");
  if (first_non_finite(x) < x.size() || first_non_finite(y) < y.size()) return 0.0;
  return detail::pearson_double(detail::average_ranks(x), detail::average_ranks(y));
}

/// Index of the largest entry of each row (the first on ties; the first NaN
/// if there is one, as numpy.argmax).
inline std::vector<std::int32_t> argmax_rows(ConstHostView logits) {
  check<ValueError>(logits.cols >= 1, "argmax_rows: logits have no columns");
  std::vector<std::int32_t> out(static_cast<std::size_t>(logits.rows));
  for (Index r = 0; r < logits.rows; ++r) {
    Index best = 0;
    for (Index c = 0; c < logits.cols && !std::isnan(logits(r, best)); ++c)
      if (logits(r, c) > logits(r, best) || std::isnan(logits(r, c))) best = c;
    out[static_cast<std::size_t>(r)] = static_cast<std::int32_t>(best);
  }
  return out;
}

/// Scores model outputs with `metric`: classification metrics take the row
/// argmax of `outputs` (batch x classes) against `labels`; Pearson / Spearman
/// take column 0 of `outputs` (batch x 1) against `targets`.
inline double score(Metric metric, ConstHostView outputs, std::span<const std::int32_t> labels,
                    std::span<const float> targets) {
  if (is_regression(metric)) {
    check<ValueError>(outputs.cols >= 1, metric_name(metric), ": outputs have no columns");
    std::vector<float> column(static_cast<std::size_t>(outputs.rows));
    for (Index r = 0; r < outputs.rows; ++r) column[static_cast<std::size_t>(r)] = outputs(r, 0);
    return metric == Metric::Pearson ? pearson(column, targets) : spearman(column, targets);
  }
  const std::vector<std::int32_t> predicted = argmax_rows(outputs);
  switch (metric) {
    case Metric::Accuracy: return accuracy(predicted, labels);
    case Metric::MacroF1: return macro_f1(predicted, labels, outputs.cols);
    case Metric::BinaryF1: return binary_f1(predicted, labels);
    case Metric::Mcc: return matthews_corrcoef(predicted, labels);
    default: break;
  }
  throw ValueError("score: unhandled metric " + metric_name(metric));
}

}  // namespace plora::metrics
