#pragma once
// A tiny plora::Model for the extractor tests: a chain of bias-free linear
// sites x -> site_0 -> site_1 -> ... -> classifier (weight + bias), softmax
// cross-entropy. Small enough that every quantity can be checked by hand or by
// finite differences, and copyable with value semantics (one replica per
// extraction thread).
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "plora/adapters/lora.hpp"
#include "plora/backend/cpu/cpu.hpp"
#include "plora/core/error.hpp"
#include "plora/core/parameter.hpp"
#include "plora/models/batches.hpp"
#include "plora/nn/linear_site.hpp"

namespace plora::test {

class TinyModel {
 public:
  using BackendType = cpu;
  using Batch = ImageBatch;
  using Site = LinearSite<cpu, Lora<cpu>>;

  /// @param sites  (name, weight (out x in)) in input-to-output order
  /// @param head_weight (classes x last out)  @param head_bias (1 x classes)
  TinyModel(std::vector<std::pair<std::string, HostMatrix>> sites, HostMatrix head_weight, HostMatrix head_bias)
      : head_weight_(std::move(head_weight)), head_bias_(std::move(head_bias)),
        d_head_weight_(head_weight_.rows(), head_weight_.cols()), d_head_bias_(1, head_bias_.cols()) {
    for (auto& [name, weight] : sites) sites_.emplace_back(name, std::move(weight), HostMatrix());
  }

  /// logits (batch x classes); counts the call.
  ConstHostView forward(const Batch& batch) {
    ++forward_calls_;
    run_forward(batch.pixels);
    return logits_.view();
  }

  float forward_backward(const Batch& batch) {
    run_forward(batch.pixels);
    HostMatrix dlogits(logits_.rows(), logits_.cols());
    const float loss = cpu::cross_entropy(dlogits.view(), logits_.view(), cpu::make_indices(batch.labels));
    // classifier: logits = h W_c^T + b_c
    cpu::gemm(d_head_weight_.view(), dlogits.view(), Op::T, activations_.back().view(), Op::N, 1.0f, 1.0f);
    cpu::column_sums(d_head_bias_.view(), dlogits.view(), 1.0f);
    HostMatrix dh(dlogits.rows(), head_weight_.cols());
    cpu::gemm(dh.view(), dlogits.view(), Op::N, head_weight_.view(), Op::N, 1.0f, 0.0f);
    for (std::size_t l = sites_.size(); l-- > 0;) {
      HostMatrix dx = l == 0 ? HostMatrix() : HostMatrix(dh.rows(), sites_[l].in_features());
      sites_[l].backward(dx.view(), dh.view(), activations_[l].view(), saved_[l]);
      dh = std::move(dx);
    }
    return loss;
  }

  ParameterList<Host> parameters() {
    return {{"classifier.weight", head_weight_.view(), d_head_weight_.view()},
            {"classifier.bias", head_bias_.view(), d_head_bias_.view()}};
  }
  void zero_grad() {
    cpu::fill(d_head_weight_.view(), 0.0f);
    cpu::fill(d_head_bias_.view(), 0.0f);
  }
  void set_training(bool training) { training_ = training; }
  [[nodiscard]] bool training() const { return training_; }

  [[nodiscard]] std::vector<std::string> site_names() const {
    std::vector<std::string> names;
    for (const auto& s : sites_) names.push_back(s.name());
    return names;
  }
  Site& site(const std::string& name) {
    check<ValueError>(name != poisoned_site_, "TinyModel: site '", name, "' is poisoned");
    for (auto& s : sites_)
      if (s.name() == name) return s;
    throw ValueError("TinyModel: no site named '" + name + "'");
  }

  /// Makes site(name) throw, to test error propagation out of worker threads.
  void poison(std::string name) { poisoned_site_ = std::move(name); }
  [[nodiscard]] long forward_calls() const { return forward_calls_; }
  [[nodiscard]] const HostMatrix& head_weight() const { return head_weight_; }
  [[nodiscard]] const HostMatrix& head_bias() const { return head_bias_; }

 private:
  void run_forward(const HostMatrix& x) {
    activations_.assign(1, x);
    saved_.resize(sites_.size());
    for (std::size_t l = 0; l < sites_.size(); ++l) {
      HostMatrix y(x.rows(), sites_[l].out_features());
      sites_[l].forward(y.view(), activations_[l].view(), saved_[l]);
      activations_.push_back(std::move(y));
    }
    logits_ = HostMatrix(x.rows(), head_weight_.rows());
    cpu::gemm(logits_.view(), activations_.back().view(), Op::N, head_weight_.view(), Op::T, 1.0f, 0.0f);
    cpu::add_row_vector(logits_.view(), head_bias_.view());
  }

  std::vector<Site> sites_;
  HostMatrix head_weight_, head_bias_;
  HostMatrix d_head_weight_, d_head_bias_;
  std::vector<HostMatrix> activations_;  // input of each site, then the classifier's input
  std::vector<Site::Saved> saved_;
  HostMatrix logits_;
  bool training_ = false;
  std::string poisoned_site_;
  long forward_calls_ = 0;
};

/// A BatchSource over fixed batches; the order does not depend on the epoch.
struct FixedBatches {
  using Batch = ImageBatch;
  std::vector<ImageBatch> batches;
  [[nodiscard]] Index batches_per_epoch() const { return static_cast<Index>(batches.size()); }
  [[nodiscard]] ImageBatch batch(Index /*epoch*/, Index i) const { return batches[static_cast<std::size_t>(i)]; }
};

/// Splits (inputs, labels) into batches of `batch_size` rows.
inline FixedBatches make_batches(const HostMatrix& inputs, const std::vector<std::int32_t>& labels, Index batch_size) {
  FixedBatches out;
  for (Index first = 0; first < inputs.rows(); first += batch_size) {
    const Index rows = std::min(batch_size, inputs.rows() - first);
    ImageBatch batch{HostMatrix(inputs.view().row_block(first, rows)), {}};
    batch.labels.assign(labels.begin() + first, labels.begin() + first + rows);
    out.batches.push_back(std::move(batch));
  }
  return out;
}

}  // namespace plora::test
