#pragma once
// AdaLoRA's rank allocator (PEFT RankAllocator + AdaLoraModel.update_and_allocate,
// REFERENCE.md §4). It shrinks the total rank budget from init_r · M to
// target_r · M (M adapted matrices) on a cubic schedule by zeroing the E entries
// of the least important singular triplets.
//
// Call order per training step, exactly as PEFT:
//   loss backward -> optimizer step -> allocator.update_and_mask(step) -> zero_grad
// i.e. the importance |p · grad| uses the post-step values with the pre-step
// gradients still held in the adapters. `step` counts from 0.
//
// Phases, with F = total_step - tfinal:
//   step <  F : update the EMAs; mask to budget_at(step) when that says so.
//   step == F : mask to the target budget, freeze that rank pattern, reset the EMAs.
//   step >  F : re-apply the frozen pattern (E entries trained back up are zeroed again).
// The pattern frozen at F comes from the statistics of the steps before it,
// which live in this object: an allocator whose first call is at or past F
// has none (every triplet would tie and be masked) and refuses the call.
//
// The statistics live on the host: each call downloads A, E, B and their grads
// (r (in + out + 1) values per matrix, small next to a forward pass); the
// threshold needs a selection over all triplets anyway.
//
// Inside Partial<AdaLora>, register `&partial.inner()`: the compact factors hold
// only the kept rows of B and kept columns of A, so the per-triplet means of the
// A and B scores are over the kept entries only.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "plora/adapters/adalora.hpp"
#include "plora/core/host_matrix.hpp"
#include "plora/train/concepts.hpp"

namespace plora {

/// @tparam B  backend of the adapters
template <Backend B>
class RankAllocator {
 public:
  /// The rank budget of a step and whether the schedule masks then.
  struct Budget {
    Index total = 0;
    bool mask_now = false;
  };

  /// Tracks `adapters` (not owned; they must outlive the allocator) under the
  /// schedule fields of `config` (target_r, tinit, tfinal, deltaT, beta1, beta2, total_step).
  RankAllocator(std::vector<AdaLora<B>*> adapters, const AdaLoraConfig& config) : config_(config) {
    check<ValueError>(!adapters.empty(), "RankAllocator: no AdaLora adapters to allocate ranks over");
    check<ValueError>(config.total_step > 0, "RankAllocator: total_step = ", config.total_step,
                      " must be > 0 (AdaLoRA needs the total number of training steps)");
    check<ValueError>(config.tinit >= 0 && config.tfinal >= 0, "RankAllocator: tinit = ", config.tinit,
                      " and tfinal = ", config.tfinal, " must be >= 0");
    check<ValueError>(config.tinit < config.total_step - config.tfinal, "RankAllocator: tinit = ", config.tinit,
                      " must be < total_step - tfinal = ", config.total_step - config.tfinal,
                      " so that a budgeting phase exists");
    check<ValueError>(config.deltaT >= 1, "RankAllocator: deltaT = ", config.deltaT, " must be >= 1");
    check<ValueError>(config.beta1 > 0.0f && config.beta1 < 1.0f && config.beta2 > 0.0f && config.beta2 < 1.0f,
                      "RankAllocator: beta1 = ", config.beta1, " and beta2 = ", config.beta2,
                      " must lie in (0, 1)");
    for (AdaLora<B>* adapter : adapters) {
      check<ValueError>(adapter != nullptr, "RankAllocator: null adapter pointer");
      tracked_.push_back({adapter, FactorState(adapter->lora_A()), FactorState(adapter->lora_E()),
                          FactorState(adapter->lora_B())});
      initial_budget_ += adapter->rank();
      rank_pattern_.emplace_back(static_cast<std::size_t>(adapter->rank()), true);
    }
    target_budget_ = config.target_r * static_cast<Index>(adapters.size());
    check<ValueError>(config.target_r >= 1 && target_budget_ <= initial_budget_, "RankAllocator: target_r = ",
                      config.target_r, " gives a target budget of ", target_budget_,
                      " ranks, which must lie in [M, initial budget ", initial_budget_, "] for M = ",
                      adapters.size(), " matrices");
  }

  /// PEFT's budget_schedule: full budget up to tinit, cubic decrease to the
  /// target at total_step - tfinal (masking when step % deltaT == 0), target after.
  [[nodiscard]] Budget budget_at(Index step) const {
    if (step <= config_.tinit) return {initial_budget_, false};
    if (step > final_step()) return {target_budget_, true};
    const double remaining = 1.0 - static_cast<double>(step - config_.tinit) /
                                       static_cast<double>(final_step() - config_.tinit);
    const double budget = static_cast<double>(initial_budget_ - target_budget_) * std::pow(remaining, 3.0) +
                          static_cast<double>(target_budget_);
    return {static_cast<Index>(budget), step % config_.deltaT == 0};
  }

  /// The per-step update (see the call order at the top of this file). Returns
  /// the step's budget and whether E was masked in this call.
  Budget update_and_mask(Index step) {
    const Budget budget = budget_at(step);
    if (step < final_step()) {
      update_importance();
      has_statistics_ = true;
      if (budget.mask_now) mask_to_budget(budget.total);
      return budget;
    }
    check<ValueError>(frozen_ || has_statistics_, "RankAllocator: first call at step ", step,
                      ", at or past the final budgeting step total_step - tfinal = ", final_step(),
                      ": no importance statistics to freeze a rank pattern from (resume AdaLoRA runs before it)");
    if (!frozen_) {
      mask_to_budget(target_budget_);
      frozen_ = true;
      for (Tracked& t : tracked_)
        for (FactorState* f : {&t.a, &t.e, &t.b}) f->reset_statistics();
      return {target_budget_, true};
    }
    for (std::size_t i = 0; i < tracked_.size(); ++i) apply_pattern(i);
    return {target_budget_, true};
  }

  [[nodiscard]] Index initial_budget() const { return initial_budget_; }
  [[nodiscard]] Index target_budget() const { return target_budget_; }
  /// Per adapter (registration order), per triplet: true when kept. PEFT's rank_pattern.
  [[nodiscard]] const std::vector<std::vector<bool>>& rank_pattern() const { return rank_pattern_; }
  /// Whether the final rank pattern has been frozen.
  [[nodiscard]] bool frozen() const { return frozen_; }
  /// Triplet scores of the last masking, per adapter and triplet.
  [[nodiscard]] const std::vector<std::vector<float>>& triplet_scores() const { return triplet_scores_; }
  /// Smoothed sensitivity Ibar of adapter i's lora_A / lora_E / lora_B (host copies).
  [[nodiscard]] const HostMatrix& sensitivity(std::size_t i, char factor) const { return state(i, factor).ibar; }
  /// Uncertainty U of adapter i's lora_A / lora_E / lora_B.
  [[nodiscard]] const HostMatrix& uncertainty(std::size_t i, char factor) const { return state(i, factor).unc; }

  // What a checkpoint needs to continue exactly (the CheckpointState concept,
  // Trainer::track_state): every factor's Ibar and U ("<i>.<A|E|B>.ibar",
  // ".unc"), each rank pattern ("<i>.rank_pattern", 1 x r of 0 / 1) and the
  // phase ("phase": frozen, has statistics, as 0 / 1).
  [[nodiscard]] StateTensors export_state() const {
    StateTensors out;
    for (std::size_t i = 0; i < tracked_.size(); ++i) {
      for (const char factor : {'A', 'E', 'B'}) {
        out.emplace(state_key(i, factor, "ibar"), state(i, factor).ibar);
        out.emplace(state_key(i, factor, "unc"), state(i, factor).unc);
      }
      HostMatrix pattern(1, static_cast<Index>(rank_pattern_[i].size()));
      for (std::size_t r = 0; r < rank_pattern_[i].size(); ++r) pattern(0, Index(r)) = rank_pattern_[i][r] ? 1.0f : 0.0f;
      out.emplace(std::to_string(i) + ".rank_pattern", std::move(pattern));
    }
    out.emplace("phase", HostMatrix(1, 2, {frozen_ ? 1.0f : 0.0f, has_statistics_ ? 1.0f : 0.0f}));
    return out;
  }
  /// Throws ValueError / ShapeError unless `tensors` is a state of these adapters.
  void check_state(const StateTensors& tensors) const {
    const StateTensors like = export_state();
    check<ValueError>(tensors.size() == like.size(), "RankAllocator state: ", tensors.size(), " tensors, expected ",
                      like.size(), " for ", tracked_.size(), " adapters");
    for (const auto& [key, expected] : like) {
      const auto it = tensors.find(key);
      check<ValueError>(it != tensors.end(), "RankAllocator state: no tensor '", key, "'");
      require_shape(it->second.view(), expected.rows(), expected.cols(), "RankAllocator state '" + key + "'");
      const bool flags = key == "phase" || key.ends_with(".rank_pattern");
      for (const float v : it->second.values())
        check<ValueError>(flags ? (v == 0.0f || v == 1.0f) : (std::isfinite(v) && v >= 0.0f), "RankAllocator state '",
                          key, "' holds ", v, flags ? ", expected 0 or 1" : ", expected a finite value >= 0");
    }
  }
  /// Replaces the statistics, patterns and phase by `tensors` (checked first).
  void import_state(const StateTensors& tensors) {
    check_state(tensors);
    for (std::size_t i = 0; i < tracked_.size(); ++i) {
      Tracked& t = tracked_[i];
      for (const auto& [factor, f] : {std::pair{'A', &t.a}, std::pair{'E', &t.e}, std::pair{'B', &t.b}}) {
        f->ibar = tensors.at(state_key(i, factor, "ibar"));
        f->unc = tensors.at(state_key(i, factor, "unc"));
      }
      const HostMatrix& pattern = tensors.at(std::to_string(i) + ".rank_pattern");
      for (std::size_t r = 0; r < rank_pattern_[i].size(); ++r) rank_pattern_[i][r] = pattern(0, Index(r)) == 1.0f;
    }
    frozen_ = tensors.at("phase")(0, 0) == 1.0f;
    has_statistics_ = tensors.at("phase")(0, 1) == 1.0f;
  }

 private:
  /// Host mirror and statistics of one factor.
  struct FactorState {
    explicit FactorState(ConstView<typename B::Space> like)
        : value(like.rows, like.cols), grad(like.rows, like.cols), ibar(like.rows, like.cols),
          unc(like.rows, like.cols) {}
    HostMatrix value, grad, ibar, unc;

    /// I = |p · g|;  Ibar = b1 Ibar + (1 - b1) I;  U = b2 U + (1 - b2) |I - Ibar| (new Ibar).
    void update(ConstView<typename B::Space> param, ConstView<typename B::Space> param_grad, float beta1,
                float beta2) {
      B::download(value.view(), param);
      B::download(grad.view(), param_grad);
      for (std::size_t k = 0; k < value.values().size(); ++k) {
        const float sensitivity = std::abs(value.values()[k] * grad.values()[k]);
        float& smooth = ibar.values()[k];
        smooth = beta1 * smooth + (1.0f - beta1) * sensitivity;
        unc.values()[k] = beta2 * unc.values()[k] + (1.0f - beta2) * std::abs(sensitivity - smooth);
      }
    }
    [[nodiscard]] float score(Index r, Index c) const { return ibar(r, c) * unc(r, c); }
    void reset_statistics() {
      std::fill(ibar.values().begin(), ibar.values().end(), 0.0f);
      std::fill(unc.values().begin(), unc.values().end(), 0.0f);
    }
  };
  struct Tracked {
    AdaLora<B>* adapter;
    FactorState a, e, b;
  };

  [[nodiscard]] Index final_step() const { return config_.total_step - config_.tfinal; }
  static std::string state_key(std::size_t i, char factor, const char* statistic) {
    return std::to_string(i) + "." + factor + "." + statistic;
  }

  const FactorState& state(std::size_t i, char factor) const {
    check<ValueError>(i < tracked_.size(), "RankAllocator: adapter index ", i, " is outside [0, ", tracked_.size(),
                      ")");
    check<ValueError>(factor == 'A' || factor == 'E' || factor == 'B', "RankAllocator: factor '", factor,
                      "' is not one of 'A', 'E', 'B'");
    const Tracked& t = tracked_[i];
    return factor == 'A' ? t.a : factor == 'E' ? t.e : t.b;
  }

  void update_importance() {
    for (Tracked& t : tracked_) {
      t.a.update(t.adapter->lora_A(), t.adapter->lora_A_grad(), config_.beta1, config_.beta2);
      t.e.update(t.adapter->lora_E(), t.adapter->lora_E_grad(), config_.beta1, config_.beta2);
      t.b.update(t.adapter->lora_B(), t.adapter->lora_B_grad(), config_.beta1, config_.beta2);
    }
  }

  /// Triplet k: s_E[k] + (mean_j s_A[k, j] + mean_i s_B[i, k]).
  static std::vector<float> triplet_scores_of(const Tracked& t) {
    const Index rank = t.e.ibar.rows();
    std::vector<float> scores(static_cast<std::size_t>(rank));
    for (Index k = 0; k < rank; ++k) {
      double sum_a = 0.0, sum_b = 0.0;
      for (Index j = 0; j < t.a.ibar.cols(); ++j) sum_a += t.a.score(k, j);
      for (Index i = 0; i < t.b.ibar.rows(); ++i) sum_b += t.b.score(i, k);
      const auto mean_a = static_cast<float>(sum_a / static_cast<double>(t.a.ibar.cols()));
      const auto mean_b = static_cast<float>(sum_b / static_cast<double>(t.b.ibar.rows()));
      scores[static_cast<std::size_t>(k)] = t.e.score(k, 0) + (mean_a + mean_b);
    }
    return scores;
  }

  /// Zeroes E of every triplet scoring at or below the (initial - budget)-th
  /// smallest score (ties can mask more, as in PEFT); no masking when that count is 0.
  void mask_to_budget(Index budget) {
    triplet_scores_.clear();
    std::vector<float> all;
    for (const Tracked& t : tracked_) {
      triplet_scores_.push_back(triplet_scores_of(t));
      all.insert(all.end(), triplet_scores_.back().begin(), triplet_scores_.back().end());
    }
    const Index k = initial_budget_ - budget;
    for (std::size_t i = 0; i < tracked_.size(); ++i) {
      for (std::size_t r = 0; r < rank_pattern_[i].size(); ++r) rank_pattern_[i][r] = true;
    }
    if (k > 0) {
      std::nth_element(all.begin(), all.begin() + (k - 1), all.end());
      const float threshold = all[static_cast<std::size_t>(k - 1)];
      for (std::size_t i = 0; i < tracked_.size(); ++i)
        for (std::size_t r = 0; r < rank_pattern_[i].size(); ++r)
          rank_pattern_[i][r] = !(triplet_scores_[i][r] <= threshold);
    }
    for (std::size_t i = 0; i < tracked_.size(); ++i) apply_pattern(i);
  }

  /// E[r] = 0 wherever adapter i's pattern drops triplet r.
  void apply_pattern(std::size_t i) {
    Tracked& t = tracked_[i];
    HostMatrix& e = t.e.value;
    B::download(e.view(), t.adapter->lora_E());
    for (Index r = 0; r < e.rows(); ++r)
      if (!rank_pattern_[i][static_cast<std::size_t>(r)]) e(r, 0) = 0.0f;
    B::upload(t.adapter->lora_E(), e.view());
  }

  AdaLoraConfig config_;
  std::vector<Tracked> tracked_;
  Index initial_budget_ = 0;
  Index target_budget_ = 0;
  bool frozen_ = false;
  bool has_statistics_ = false;  // update_importance has run at least once
  std::vector<std::vector<bool>> rank_pattern_;
  std::vector<std::vector<float>> triplet_scores_;
};

}  // namespace plora
