// Learning-rate schedules, gradient clipping and the finite guard against
// hand-computed values.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <numbers>

#include "plora/backend/cpu/cpu.hpp"
#include "plora/train/clip.hpp"
#include "plora/train/guard.hpp"
#include "plora/train/schedule.hpp"

using namespace plora;

TEST_CASE("linear warm-up then linear decay (get_linear_schedule_with_warmup)") {
  const LinearWarmupDecay s(4, 20);
  CHECK(s(0) == 0.0);
  CHECK(s(1) == 0.25);
  CHECK(s(2) == 0.5);
  CHECK(s(4) == 1.0);
  CHECK(s(12) == 0.5);  // (20 - 12) / (20 - 4)
  CHECK(s(16) == 0.25);
  CHECK(s(20) == 0.0);
  CHECK(s(25) == 0.0);
  CHECK(LinearWarmupDecay(0, 10)(0) == 1.0);
  CHECK(LinearWarmupDecay(0, 10)(5) == 0.5);
  // Warm-up reaching the total: max(0, (total - step) / max(1, total - warmup)) is 0 from then on.
  CHECK(LinearWarmupDecay(5, 5)(4) == 0.8);
  CHECK(LinearWarmupDecay(5, 5)(5) == 0.0);
  CHECK(LinearWarmupDecay(10, 5)(10) == 0.0);
  CHECK(LinearWarmupDecay(0, 0)(0) == 0.0);
  CHECK(LinearWarmupDecay(4, 5)(4) == 1.0);
}

TEST_CASE("linear warm-up then cosine decay (get_cosine_schedule_with_warmup)") {
  const CosineWarmupDecay s(4, 20);
  CHECK(s(0) == 0.0);
  CHECK(s(2) == 0.5);
  CHECK(s(4) == doctest::Approx(1.0).epsilon(1e-15));
  // progress 0.25: 0.5 (1 + cos(pi / 4)) = 0.5 + sqrt(2) / 4
  CHECK(s(8) == doctest::Approx(0.5 + std::sqrt(2.0) / 4.0).epsilon(1e-14));
  CHECK(s(12) == doctest::Approx(0.5).epsilon(1e-14));
  CHECK(s(20) == doctest::Approx(0.0).scale(1.0).epsilon(1e-15));
  // One full cycle reaches 0 halfway and comes back to 1.
  const CosineWarmupDecay full(0, 10, 1.0);
  CHECK(full(5) == doctest::Approx(0.0).scale(1.0).epsilon(1e-15));
  CHECK(full(10) == doctest::Approx(1.0).epsilon(1e-15));
  CHECK(ConstantSchedule{}(123) == 1.0);
}

TEST_CASE("invalid schedules") {
  CHECK_THROWS_AS(LinearWarmupDecay(-1, 10), ValueError);
  CHECK_THROWS_AS(CosineWarmupDecay(0, -5), ValueError);
  CHECK_THROWS_AS(CosineWarmupDecay(0, 5, 0.0), ValueError);
  // An infinite cycle count makes every factor NaN (inf * 0 at the first decay step).
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH_AS(CosineWarmupDecay(0, 10, inf), doctest::Contains("num_cycles"), ValueError);
  CHECK_THROWS_WITH_AS(CosineWarmupDecay(0, 10, nan), doctest::Contains("num_cycles"), ValueError);
}

TEST_CASE("clip_grad_norm scales all gradients by max_norm / (norm + 1e-6)") {
  HostMatrix v1(1, 2), g1(1, 2, {3.0f, 4.0f}), v2(1, 1), g2(1, 1, {12.0f});
  ParameterList<Host> params{{"a", v1.view(), g1.view()}, {"b", v2.view(), g2.view()}};
  // Total norm sqrt(9 + 16 + 144) = 13; coef = 6.5 / (13 + 1e-6).
  const double total = clip_grad_norm<cpu>(params, 6.5);
  CHECK(total == doctest::Approx(13.0).epsilon(1e-12));
  const double coef = 6.5 / (13.0 + 1e-6);
  // One float multiply per entry: relative error <= 2^-24 plus the coef rounding.
  CHECK(g1(0, 0) == doctest::Approx(3.0 * coef).epsilon(2e-7));
  CHECK(g1(0, 1) == doctest::Approx(4.0 * coef).epsilon(2e-7));
  CHECK(g2(0, 0) == doctest::Approx(12.0 * coef).epsilon(2e-7));
  CHECK(grad_norm<cpu>(params) == doctest::Approx(6.5).epsilon(1e-6));
  // Below the threshold nothing changes, bit for bit.
  HostMatrix v3(1, 2), g3(1, 2, {3.0f, 4.0f});
  ParameterList<Host> small{{"c", v3.view(), g3.view()}};
  CHECK(clip_grad_norm<cpu>(small, 5.1) == doctest::Approx(5.0).epsilon(1e-12));
  CHECK(g3(0, 0) == 3.0f);
  CHECK(g3(0, 1) == 4.0f);
  CHECK_THROWS_AS(clip_grad_norm<cpu>(small, 0.0), ValueError);
}

TEST_CASE("the finite guard names the step and the parameter") {
  HostMatrix v(2, 2), good(2, 2, {1, 2, 3, 4}), bad(2, 2, {1, 2, 3, 4});
  bad(1, 0) = std::numeric_limits<float>::infinity();
  ParameterList<Host> params{{"enc.0.query.lora_A", v.view(), good.view()},
                             {"enc.0.query.lora_B", v.view(), bad.view()}};
  CHECK_THROWS_WITH_AS(check_finite<cpu>(0.5f, params, 7),
                       doctest::Contains("step 7: the gradient of parameter 'enc.0.query.lora_B'"), NumericError);
  CHECK_THROWS_WITH_AS(check_finite<cpu>(std::nanf(""), params, 3), doctest::Contains("step 3: the loss"),
                       NumericError);
  bad(1, 0) = std::nanf("");
  CHECK_THROWS_AS(check_finite<cpu>(0.5f, params, 0), NumericError);
  bad(1, 0) = 0.0f;
  CHECK_NOTHROW(check_finite<cpu>(0.5f, params, 0));
}
