// AdamW and SGD against the torch update formulas evaluated in double, state
// export / import, and validation.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "plora/backend/cpu/cpu.hpp"
#include "plora/train/adamw.hpp"
#include "plora/train/sgd.hpp"
#include "support/numeric.hpp"

using namespace plora;
using plora::test::max_abs_diff;

static_assert(Optimizer<AdamW<cpu>>);
static_assert(Optimizer<Sgd<cpu>>);

namespace {
/// One trainable (1 x n) tensor with its gradient.
struct Tensor {
  HostMatrix value, grad;
  Tensor(std::vector<float> v) : value(1, static_cast<Index>(v.size()), v), grad(1, static_cast<Index>(v.size())) {}
};

ParameterList<Host> as_params(std::vector<std::pair<std::string, Tensor*>> tensors) {
  ParameterList<Host> out;
  for (auto& [name, t] : tensors) out.push_back({name, t->value.view(), t->grad.view()});
  return out;
}

// Gradients of three steps, fed in as if a model had produced them.
const std::vector<std::vector<double>> kGrads{{0.3, -1.2, 0.05}, {-0.4, 0.9, 2.0}, {0.1, -0.1, -3.0}};
const std::vector<double> kStart{0.5, -1.0, 2.0};

void set_grad(Tensor& t, const std::vector<double>& g) {
  for (std::size_t i = 0; i < g.size(); ++i) t.grad(0, static_cast<Index>(i)) = static_cast<float>(g[i]);
}

/// torch.optim.AdamW, single-tensor path, in double.
std::vector<double> adamw_reference(double lr, double b1, double b2, double eps, double wd, int steps) {
  std::vector<double> p = kStart, m(3, 0.0), v(3, 0.0);
  for (int t = 1; t <= steps; ++t) {
    const auto& g = kGrads[static_cast<std::size_t>(t - 1)];
    for (std::size_t i = 0; i < 3; ++i) {
      p[i] *= 1.0 - lr * wd;
      m[i] = b1 * m[i] + (1.0 - b1) * g[i];
      v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
      const double m_hat = m[i] / (1.0 - std::pow(b1, t));
      const double v_hat = v[i] / (1.0 - std::pow(b2, t));
      p[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
    }
  }
  return p;
}

/// torch.optim.SGD in double.
std::vector<double> sgd_reference(double lr, double mu, double dampening, double wd, bool nesterov, int steps) {
  std::vector<double> p = kStart, b(3, 0.0);
  for (int t = 1; t <= steps; ++t) {
    const auto& g = kGrads[static_cast<std::size_t>(t - 1)];
    for (std::size_t i = 0; i < 3; ++i) {
      double d = g[i] + wd * p[i];
      if (mu != 0.0) {
        b[i] = t == 1 ? d : mu * b[i] + (1.0 - dampening) * d;
        d = nesterov ? d + mu * b[i] : b[i];
      }
      p[i] -= lr * d;
    }
  }
  return p;
}

// Values are O(1) and each float step rounds a few times at ~6e-8 relative;
// three steps stay far below 1e-6.
constexpr double kTol = 1e-6;

void check_close(const HostMatrix& got, const std::vector<double>& expected) {
  for (std::size_t i = 0; i < expected.size(); ++i)
    CHECK(std::abs(double(got(0, static_cast<Index>(i))) - expected[i]) < kTol);
}
}  // namespace

TEST_CASE("AdamW follows torch.optim.AdamW for three steps") {
  Tensor w({0.5f, -1.0f, 2.0f});
  auto params = as_params({{"w", &w}});
  AdamW<cpu> adamw({.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01});
  for (int t = 1; t <= 3; ++t) {
    set_grad(w, kGrads[static_cast<std::size_t>(t - 1)]);
    adamw.step(params);
    check_close(w.value, adamw_reference(0.1, 0.9, 0.999, 1e-8, 0.01, t));
  }
  CHECK(adamw.step_count() == 3);
  // Step 1 moves every entry by about lr against its gradient's sign: a check
  // independent of the formula above.
  Tensor fresh({0.5f, -1.0f, 2.0f});
  auto fresh_params = as_params({{"w", &fresh}});
  AdamW<cpu> plain({.lr = 0.1, .weight_decay = 0.0});
  set_grad(fresh, kGrads[0]);
  plain.step(fresh_params);
  CHECK(fresh.value(0, 0) == doctest::Approx(0.4).epsilon(1e-6));
  CHECK(fresh.value(0, 1) == doctest::Approx(-0.9).epsilon(1e-6));
  CHECK(fresh.value(0, 2) == doctest::Approx(1.9).epsilon(1e-6));
}

TEST_CASE("AdamW: lr scale, no-decay names and other hyper-parameters") {
  Tensor w({0.5f, -1.0f, 2.0f}), bias({0.5f, -1.0f, 2.0f});
  auto params = as_params({{"layer.weight", &w}, {"layer.bias", &bias}});
  AdamW<cpu> adamw({.lr = 0.2, .beta1 = 0.8, .beta2 = 0.99, .eps = 1e-6, .weight_decay = 0.5, .no_decay = {"bias"}});
  adamw.set_lr_scale(0.25);  // effective lr 0.05
  CHECK(adamw.lr() == doctest::Approx(0.05));
  for (int t = 1; t <= 2; ++t) {
    set_grad(w, kGrads[static_cast<std::size_t>(t - 1)]);
    set_grad(bias, kGrads[static_cast<std::size_t>(t - 1)]);
    adamw.step(params);
  }
  check_close(w.value, adamw_reference(0.05, 0.8, 0.99, 1e-6, 0.5, 2));
  check_close(bias.value, adamw_reference(0.05, 0.8, 0.99, 1e-6, 0.0, 2));
}

TEST_CASE("SGD follows torch.optim.SGD: plain, momentum, dampening, Nesterov") {
  const std::vector<SgdConfig> configs{
      {.lr = 0.1, .momentum = 0.0, .dampening = 0.0, .weight_decay = 0.1, .nesterov = false},
      {.lr = 0.1, .momentum = 0.9, .dampening = 0.0, .weight_decay = 0.1, .nesterov = false},
      {.lr = 0.05, .momentum = 0.8, .dampening = 0.5, .weight_decay = 0.0, .nesterov = false},
      {.lr = 0.1, .momentum = 0.9, .dampening = 0.0, .weight_decay = 0.1, .nesterov = true},
  };
  for (const SgdConfig& config : configs) {
    CAPTURE(config.momentum);
    CAPTURE(config.nesterov);
    Tensor w({0.5f, -1.0f, 2.0f});
    auto params = as_params({{"w", &w}});
    Sgd<cpu> sgd(config);
    for (int t = 1; t <= 3; ++t) {
      set_grad(w, kGrads[static_cast<std::size_t>(t - 1)]);
      sgd.step(params);
      check_close(w.value,
                  sgd_reference(config.lr, config.momentum, config.dampening, config.weight_decay, config.nesterov, t));
    }
    // A momentum buffer exists exactly when momentum is used.
    CHECK(sgd.export_state().tensors.size() == (config.momentum != 0.0 ? 1u : 0u));
  }
}

TEST_CASE("exported optimizer state resumes bitwise in a fresh optimizer") {
  enum class Mode { Uninterrupted, Resumed, Restarted };
  // Two steps, then a third by the same optimizer, by a fresh one given the
  // exported state, or by a fresh one without it.
  const auto run = [](auto make, Mode mode) {
    Tensor a({0.5f, -1.0f, 2.0f}), b({1.0f, 0.25f, -0.5f});
    auto params = as_params({{"a", &a}, {"b", &b}});
    auto opt = make();
    for (int t = 1; t <= 2; ++t) {
      set_grad(a, kGrads[static_cast<std::size_t>(t - 1)]);
      set_grad(b, kGrads[static_cast<std::size_t>(2 - t)]);
      opt.step(params);
    }
    auto next = make();
    if (mode == Mode::Resumed) next.import_state(opt.export_state(), params);
    set_grad(a, kGrads[2]);
    set_grad(b, kGrads[0]);
    (mode == Mode::Uninterrupted ? opt : next).step(params);
    std::vector<float> out(a.value.values().begin(), a.value.values().end());
    out.insert(out.end(), b.value.values().begin(), b.value.values().end());
    return out;
  };
  const auto adam = [] { return AdamW<cpu>({.lr = 0.1}); };
  const auto sgd = [] { return Sgd<cpu>({.lr = 0.1, .momentum = 0.9}); };
  CHECK(run(adam, Mode::Uninterrupted) == run(adam, Mode::Resumed));
  CHECK(run(sgd, Mode::Uninterrupted) == run(sgd, Mode::Resumed));
  // Without the state the third step differs, so the comparison above can fail.
  CHECK(run(adam, Mode::Uninterrupted) != run(adam, Mode::Restarted));
  CHECK(run(sgd, Mode::Uninterrupted) != run(sgd, Mode::Restarted));
}

TEST_CASE("optimizer state: keys, step count, bad imports and shape changes") {
  Tensor w({0.5f, -1.0f, 2.0f});
  auto params = as_params({{"enc.lora_A", &w}});
  AdamW<cpu> adamw;
  set_grad(w, kGrads[0]);
  adamw.step(params);
  const OptimizerState state = adamw.export_state();
  CHECK(state.step == 1);
  REQUIRE(state.tensors.size() == 2);
  // exp_avg after one step is (1 - beta1) g.
  CHECK(state.tensors.at("enc.lora_A.exp_avg")(0, 1) == doctest::Approx(0.1 * -1.2).epsilon(1e-6));
  CHECK(state.tensors.at("enc.lora_A.exp_avg_sq")(0, 1) == doctest::Approx(0.001 * 1.44).epsilon(1e-6));

  // Each bad import is refused naming what is wrong, and leaves the optimizer as it was.
  const auto refused = [&](const OptimizerState& bad, const char* message) {
    AdamW<cpu> fresh;
    fresh.import_state(state, params);
    CHECK_THROWS_WITH_AS(fresh.import_state(bad, params), doctest::Contains(message), ValueError);
    CHECK(fresh.step_count() == 1);
    CHECK(fresh.export_state().tensors.size() == 2);
  };
  OptimizerState unknown = state;
  unknown.tensors.emplace("enc.lora_A.momentum_buffer", HostMatrix(1, 3));
  refused(unknown, "'enc.lora_A.momentum_buffer' is not a buffer this optimizer keeps");
  OptimizerState missing = state;
  missing.tensors.erase("enc.lora_A.exp_avg_sq");
  refused(missing, "state of 'enc.lora_A' lacks its 'exp_avg_sq' buffer");
  OptimizerState stranger = state;
  stranger.tensors.emplace("enc.lora_B.exp_avg", HostMatrix(1, 3));
  refused(stranger, "'enc.lora_B.exp_avg' belongs to no parameter being trained");
  OptimizerState misshapen = state;
  misshapen.tensors.at("enc.lora_A.exp_avg") = HostMatrix(3, 1);
  CHECK_THROWS_WITH_AS(AdamW<cpu>().import_state(misshapen, params), doctest::Contains("AdamW state 'enc.lora_A.exp_avg'"),
                       ShapeError);
  OptimizerState before_first_step = state;
  before_first_step.step = 0;
  refused(before_first_step, "state tensor 'enc.lora_A.exp_avg' where none is kept (step 0)");
  // Another optimizer's state would restart the moments under AdamW's step count.
  Sgd<cpu> sgd({.lr = 0.1});
  sgd.step(params);
  refused(sgd.export_state(), "AdamW: the state to import was kept by 'Sgd'");
  Sgd<cpu> with_momentum({.lr = 0.1, .momentum = 0.9});
  with_momentum.step(params);
  CHECK_THROWS_WITH_AS(sgd.import_state(with_momentum.export_state(), params),
                       doctest::Contains("'enc.lora_A.momentum_buffer' where none is kept (step 1)"), ValueError);

  Tensor wider({0.5f, -1.0f, 2.0f, 3.0f});
  auto changed = as_params({{"enc.lora_A", &wider}});
  CHECK_THROWS_WITH_AS(adamw.step(changed), doctest::Contains("enc.lora_A"), ShapeError);

  adamw.zero_state();
  CHECK(adamw.step_count() == 0);
  CHECK(adamw.export_state().tensors.empty());
}

TEST_CASE("invalid optimizer hyper-parameters") {
  CHECK_THROWS_AS(AdamW<cpu>({.lr = -1.0}), ValueError);
  CHECK_THROWS_AS(AdamW<cpu>({.lr = 1e-3, .beta1 = 1.0}), ValueError);
  CHECK_THROWS_AS(AdamW<cpu>({.lr = 1e-3, .beta1 = 0.9, .beta2 = -0.1}), ValueError);
  CHECK_THROWS_AS(Sgd<cpu>({.lr = 0.1, .momentum = 0.0, .dampening = 0.0, .weight_decay = 0.0, .nesterov = true}),
                  ValueError);
  CHECK_THROWS_AS(Sgd<cpu>({.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.0, .nesterov = true}),
                  ValueError);

  // Non-finite values: `x >= 0` refuses NaN but lets +inf through, and an infinite rate or decay
  // turns every parameter into NaN at the first step.
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH_AS(AdamW<cpu>({.lr = inf}), doctest::Contains("AdamW: lr = inf"), ValueError);
  CHECK_THROWS_WITH_AS(AdamW<cpu>({.lr = nan}), doctest::Contains("AdamW: lr"), ValueError);
  CHECK_THROWS_WITH_AS(AdamW<cpu>({.eps = inf}), doctest::Contains("AdamW: eps = inf"), ValueError);
  CHECK_THROWS_WITH_AS(AdamW<cpu>({.weight_decay = inf}), doctest::Contains("AdamW: weight_decay = inf"), ValueError);
  CHECK_THROWS_WITH_AS(AdamW<cpu>({.beta1 = nan}), doctest::Contains("beta1"), ValueError);
  CHECK_THROWS_WITH_AS(Sgd<cpu>({.lr = inf}), doctest::Contains("Sgd: lr = inf"), ValueError);
  CHECK_THROWS_WITH_AS(Sgd<cpu>({.momentum = inf}), doctest::Contains("Sgd: momentum = inf"), ValueError);
  CHECK_THROWS_WITH_AS(Sgd<cpu>({.weight_decay = inf}), doctest::Contains("Sgd: weight_decay = inf"), ValueError);
  for (const double dampening : {nan, -0.1, 1.5, inf})
    CHECK_THROWS_WITH_AS(Sgd<cpu>({.momentum = 0.9, .dampening = dampening}), doctest::Contains("Sgd: dampening"),
                         ValueError);
  CHECK_NOTHROW(Sgd<cpu>({.momentum = 0.9, .dampening = 1.0}));

  // The scale a schedule sets: NaN or a negative one would reach the update as its learning rate.
  AdamW<cpu> adamw;
  Sgd<cpu> sgd;
  for (const double scale : {nan, -0.5, inf}) {
    CHECK_THROWS_WITH_AS(adamw.set_lr_scale(scale), doctest::Contains("AdamW: learning rate scale"), ValueError);
    CHECK_THROWS_WITH_AS(sgd.set_lr_scale(scale), doctest::Contains("Sgd: learning rate scale"), ValueError);
  }
  adamw.set_lr_scale(0.0);
  CHECK(adamw.lr() == 0.0);
}
