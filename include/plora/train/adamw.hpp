#pragma once
// AdamW with torch.optim.AdamW semantics (Loshchilov & Hutter 2019): decoupled
// weight decay p *= 1 - lr wd, bias-corrected first and second moments,
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/core/parameter.hpp"
#include "plora/train/detail/optimizer_base.hpp"
#include "plora/train/optimizer_concepts.hpp"

namespace plora {

struct AdamWConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;  ///< torch's default
  /// Parameters whose name contains one of these get no weight decay (the HF
  /// Trainer excludes "bias" and LayerNorm weights).
  std::vector<std::string> no_decay{};
};

/// @tparam B  backend; the update is one fused B::adamw_step per parameter
template <Backend B>
class AdamW : public detail::OptimizerBase<B, 2> {
 public:
  using BackendType = B;

  explicit AdamW(AdamWConfig config = {})
      : detail::OptimizerBase<B, 2>("AdamW", {"exp_avg", "exp_avg_sq"}), config_(std::move(config)) {
    detail::check_non_negative("AdamW", "lr", config_.lr);
    check<ValueError>(config_.beta1 >= 0.0 && config_.beta1 < 1.0, "AdamW: beta1 ", config_.beta1,
                      " is outside [0, 1)");
    check<ValueError>(config_.beta2 >= 0.0 && config_.beta2 < 1.0, "AdamW: beta2 ", config_.beta2,
                      " is outside [0, 1)");
    detail::check_non_negative("AdamW", "eps", config_.eps);
    detail::check_non_negative("AdamW", "weight_decay", config_.weight_decay);
  }

  void step(ParameterList<typename B::Space>& params) {
    const auto t = static_cast<double>(++this->step_);
    AdamWStep s;
    s.lr = static_cast<float>(lr());
    s.beta1 = static_cast<float>(config_.beta1);
    s.beta2 = static_cast<float>(config_.beta2);
    s.eps = static_cast<float>(config_.eps);
    // The moments decay with the float betas (the kernel forms 1 - beta in
    // float); bias-correcting with the same betas keeps m_hat and v_hat
    // unbiased, e.g. v_hat = g^2 exactly at t = 1 (float(0.999) is off by 1e-8,
    // 1 - float(0.999) by 1.3e-5 relative).
    s.bias_correction1 = static_cast<float>(1.0 - std::pow(static_cast<double>(s.beta1), t));
    s.bias_correction2 = static_cast<float>(1.0 - std::pow(static_cast<double>(s.beta2), t));
    for (auto& param : params) {
      auto [moments, created] = this->buffers_.get(param);
      s.weight_decay = decays(param.name) ? static_cast<float>(config_.weight_decay) : 0.0f;
      B::adamw_step(param.value, param.grad, moments[0].view(), moments[1].view(), s);
    }
  }

  /// The base class's import, after checking that every second moment is >= 0
  /// (a negative one would turn the next update into NaN).
  void import_state(const OptimizerState& state, const ParameterList<typename B::Space>& params) {
    for (const auto& [key, value] : state.tensors) {
      if (!key.ends_with(".exp_avg_sq")) continue;
      const auto negative = std::find_if(value.values().begin(), value.values().end(), [](float v) { return v < 0.0f; });
      if (negative != value.values().end())
        throw ValueError(plora::detail::concat("AdamW: second moment '", key, "' holds ", *negative, " at element ",
                                               negative - value.values().begin(), " (must be >= 0)"));
    }
    detail::OptimizerBase<B, 2>::import_state(state, params);
  }

  [[nodiscard]] double lr() const { return config_.lr * this->lr_scale_; }
  [[nodiscard]] const AdamWConfig& config() const { return config_; }

 private:
  [[nodiscard]] bool decays(const std::string& name) const {
    for (const auto& part : config_.no_decay)
      if (name.find(part) != std::string::npos) return false;
    return true;
  }

  AdamWConfig config_;
};

}  // namespace plora
