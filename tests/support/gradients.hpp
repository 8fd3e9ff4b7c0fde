#pragma once
// Checks shared by the model tests: two runs of one model produced the same
// trainable gradients; training dropout is reproducible and differentiated.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <string>

#include "plora/backend/cpu/cpu.hpp"
#include "plora/core/parameter.hpp"
#include "support/numeric.hpp"

namespace plora::test {

/// Same parameter names in the same order, every gradient non-zero, and each
/// within `tolerance` relative error of the other run's.
inline void check_same_gradients(const ParameterList<Host>& actual, const ParameterList<Host>& expected,
                                 double tolerance) {
  REQUIRE(actual.size() == expected.size());
  for (std::size_t i = 0; i < actual.size(); ++i) {
    INFO("gradient of ", expected[i].name);
    CHECK(actual[i].name == expected[i].name);
    CHECK(max_abs(expected[i].grad) > 0.0);
    CHECK(relative_error(actual[i].grad, expected[i].grad) <= tolerance);
  }
}

/// The end of both models' dropout tests. `model` (LoRA with a non-zero B on
/// every site) has run one training forward_backward of `batch` from stream
/// offset 0; `probe` is the same model, untouched; `eval_logits` came from an
/// evaluating forward. In training the stream's offset fixes every mask (a
/// rerun from offset 0 is bitwise equal), dropout changes the logits, and
/// `model`'s gradients of the LoRA B of `site` and of the classifier weight
/// equal central differences of `probe`'s loss with the masks held fixed:
/// h = 1e-2 on an O(1) float loss resolves them to ~1e-3 relative, a missing
/// or misplaced mask gives O(1) errors at most entries. Each entry checked
/// costs two forward_backward passes, so a sample is checked: every
/// (cols + 1)-th entry of B (every column, rows across all heads) and every
/// third of the classifier's first two label rows (each row's gradient is
/// (p - y) times the same dropped features, so a mask error shows in any).
template <class Model, class Batch>
void check_training_dropout(Model& model, Model& probe, const Batch& batch, const HostMatrix& eval_logits,
                            const std::string& site) {
  probe.set_training(true);
  const HostMatrix first = to_host<cpu>(probe.forward(batch));
  probe.dropout_stream().set_offset(0);
  const HostMatrix again = to_host<cpu>(probe.forward(batch));
  CHECK(max_abs_diff(again.view(), first.view()) == 0.0);
  CHECK(max_abs_diff(first.view(), eval_logits.view()) > 1e-3);

  const auto loss = [&] {
    probe.dropout_stream().set_offset(0);
    probe.zero_grad();
    return double(probe.forward_backward(batch));
  };
  const HostMatrix lora_b_grad(model.site(site).adapter().lora_B_grad());
  const HostView lora_b = probe.site(site).adapter().lora_B();
  const SampledGradient b = sampled_finite_difference(lora_b, lora_b_grad.view(), loss, lora_b.cols + 1);
  CHECK(relative_error(b.analytic.view(), b.numeric.view()) <= 1e-2);
  const HostMatrix head_grad(model.classifier().parameters().at(0).grad);
  const Index head_rows = std::min<Index>(2, head_grad.rows());
  const SampledGradient head = sampled_finite_difference(probe.classifier().weight().row_block(0, head_rows),
                                                         head_grad.view().row_block(0, head_rows), loss, 3);
  CHECK(relative_error(head.analytic.view(), head.numeric.view()) <= 1e-2);
}

}  // namespace plora::test
