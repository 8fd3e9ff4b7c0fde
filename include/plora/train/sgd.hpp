#pragma once
// SGD with torch.optim.SGD semantics: L2 weight decay added to the gradient,
// momentum buffer b = mu b + (1 - dampening) d (b = d on the first step),
// Nesterov d + mu b, then p -= lr d.
#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/core/parameter.hpp"
#include "plora/train/detail/optimizer_base.hpp"
#include "plora/train/optimizer_concepts.hpp"

namespace plora {

struct SgdConfig {
  double lr = 1e-2;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

/// @tparam B  backend; the update is one fused B::sgd_step per parameter
template <Backend B>
class Sgd : public detail::OptimizerBase<B, 1> {
 public:
  using BackendType = B;

  explicit Sgd(SgdConfig config = {})
      : detail::OptimizerBase<B, 1>("Sgd", {"momentum_buffer"}, config.momentum != 0.0), config_(config) {
    detail::check_non_negative("Sgd", "lr", config_.lr);
    detail::check_non_negative("Sgd", "momentum", config_.momentum);
    // The buffer keeps (1 - dampening) of each gradient: a fraction, so in [0, 1].
    check<ValueError>(config_.dampening >= 0.0 && config_.dampening <= 1.0, "Sgd: dampening = ", config_.dampening,
                      " is outside [0, 1]");
    detail::check_non_negative("Sgd", "weight_decay", config_.weight_decay);
    check<ValueError>(!config_.nesterov || (config_.momentum > 0.0 && config_.dampening == 0.0),
                      "Sgd: Nesterov momentum needs momentum > 0 and zero dampening");
  }

  void step(ParameterList<typename B::Space>& params) {
    ++this->step_;
    SgdStep s;
    s.lr = static_cast<float>(lr());
    s.momentum = static_cast<float>(config_.momentum);
    s.dampening = static_cast<float>(config_.dampening);
    s.weight_decay = static_cast<float>(config_.weight_decay);
    s.nesterov = config_.nesterov;
    for (auto& param : params) {
      if (config_.momentum == 0.0) {
        // Without momentum no buffer is kept; the op ignores its buffer argument.
        B::sgd_step(param.value, param.grad, param.value, s);
        continue;
      }
      auto [buffer, created] = this->buffers_.get(param);
      s.first_step = created;
      B::sgd_step(param.value, param.grad, buffer[0].view(), s);
    }
  }

  [[nodiscard]] double lr() const { return config_.lr * this->lr_scale_; }
  [[nodiscard]] const SgdConfig& config() const { return config_; }

 private:
  SgdConfig config_;
};

}  // namespace plora
