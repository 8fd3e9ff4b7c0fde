#pragma once
// Linear-probe warm-up (METHOD.md §2, step 1): a new classification head is
// fitted on the few-shot set with the backbone frozen, so that the reference
// metric M0 means something before the ratio search. The head is the set of
// the model's parameters() whose names start with one of `head_prefixes`
// ("classifier" by default; DeBERTa's head is {"pooler", "classifier"}); only
// they are updated (AdamW, no weight decay by default), everything else stays as it is.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/core/parameter.hpp"
#include "plora/models/concepts.hpp"
#include "plora/train/adamw.hpp"
#include "plora/train/concepts.hpp"

namespace plora {

struct LinearProbeConfig {
  Index epochs = 20;
  AdamWConfig optimizer{.lr = 1e-2, .weight_decay = 0.0};
  std::vector<std::string> head_prefixes{"classifier"};
};

/// Fits the head of `model` in place on `few_shot` (epochs 0 .. epochs - 1 of
/// the source, in eval mode so no dropout) and returns each epoch's mean loss.
/// Throws ValueError for epochs < 1, an empty few-shot set or a model with no
/// parameter under `head_prefixes`; NumericError for a non-finite loss.
/// @tparam M  a Model whose parameters() include the head
/// @tparam S  a BatchSource of M's batches
template <Model M, BatchSource S>
  requires std::same_as<typename S::Batch, typename M::Batch>
std::vector<float> fit_linear_probe(M& model, const S& few_shot, const LinearProbeConfig& config) {
  using B = typename M::BackendType;
  check<ValueError>(config.epochs >= 1, "linear probe: epochs must be >= 1, got ", config.epochs);
  const Index batches = few_shot.batches_per_epoch();
  check<ValueError>(batches > 0, "linear probe: the few-shot set has no batches (zero shots per class?)");

  ParameterList<typename B::Space> head;
  for (auto& p : model.parameters())
    if (std::any_of(config.head_prefixes.begin(), config.head_prefixes.end(),
                    [&](const std::string& prefix) { return p.name.starts_with(prefix); }))
      head.push_back(p);
  std::string prefixes;
  for (const auto& prefix : config.head_prefixes) prefixes += (prefixes.empty() ? "'" : ", '") + prefix + "'";
  check<ValueError>(!head.empty(), "linear probe: the model has no parameter whose name starts with ",
                    prefixes.empty() ? std::string("(no head prefix given)") : prefixes);

  AdamW<B> optimizer(config.optimizer);
  model.set_training(false);
  std::vector<float> epoch_losses;
  for (Index epoch = 0; epoch < config.epochs; ++epoch) {
    double loss_sum = 0.0;
    for (Index i = 0; i < batches; ++i) {
      model.zero_grad();
      const float loss = model.forward_backward(few_shot.batch(epoch, i));
      check<NumericError>(std::isfinite(loss), "linear probe: loss of epoch ", epoch, " batch ", i, " is ", loss);
      loss_sum += loss;
      optimizer.step(head);
    }
    epoch_losses.push_back(static_cast<float>(loss_sum / static_cast<double>(batches)));
  }
  model.zero_grad();
  return epoch_losses;
}

}  // namespace plora
