// AdaLora: PEFT initialisation and coefficient, forward against naive loops,
// gradients against finite differences, the orthogonality regulariser, and the
// rank allocator's budget schedule and masking against hand-computed cases.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "adapters/adapter_testing.hpp"

using namespace plora;
using namespace plora::test;

namespace {
constexpr Index kOut = 6, kIn = 9, kTokens = 5;

AdaLoraConfig config(Index init_r = 3, float alpha = 8.0f, float dropout = 0.0f) {
  AdaLoraConfig c;
  c.init_r = init_r;
  c.target_r = 1;
  c.alpha = alpha;
  c.dropout = dropout;
  return c;
}

/// Sets a parameter (value or grad) from row-major values.
void set(HostView target, std::initializer_list<float> values) {
  REQUIRE(static_cast<Index>(values.size()) == target.size());
  auto it = values.begin();
  for (Index r = 0; r < target.rows; ++r)
    for (Index c = 0; c < target.cols; ++c) target(r, c) = *it++;
}

/// Parameter `name` of an adapter.
Parameter<Host> param(AdaLora<cpu>& adapter, const std::string& name) {
  for (auto& p : adapter.parameters())
    if (p.name == name) return p;
  FAIL("no parameter ", name);
  return {};
}

/// ||G - I||_F by loops in double, G = M M^T (rows: lora_A) or M^T M (lora_B).
double deviation(ConstHostView m, bool rows) {
  const Index r = rows ? m.rows : m.cols, n = rows ? m.cols : m.rows;
  double total = 0;
  for (Index i = 0; i < r; ++i)
    for (Index j = 0; j < r; ++j) {
      double g = 0;
      for (Index p = 0; p < n; ++p) g += rows ? double(m(i, p)) * m(j, p) : double(m(p, i)) * m(p, j);
      total += (g - (i == j)) * (g - (i == j));
    }
  return std::sqrt(total);
}
}  // namespace

TEST_CASE("AdaLora initialises like PEFT: A then B ~ N(0, 0.02^2) from the stream, E = 0") {
  AdaLora<cpu> ada(kOut, kIn, config(), RandomStream(3, 4));
  RandomStream draws(3, 4);
  for (Index k = 0; k < 3; ++k)
    for (Index i = 0; i < kIn; ++i) CHECK(ada.lora_A()(k, i) == 0.02f * draws.normal());
  for (Index o = 0; o < kOut; ++o)
    for (Index k = 0; k < 3; ++k) CHECK(ada.lora_B()(o, k) == 0.02f * draws.normal());
  CHECK(max_abs(ada.lora_E()) == 0.0);
  CHECK(ada.lora_E().rows == 3);
  CHECK(ada.lora_E().cols == 1);
  // scaling / (ranknum + 1e-5) with ranknum = init_r
  CHECK(ada.scaling() == 8.0f);
  CHECK(ada.coefficient() == doctest::Approx(8.0 / (3.0 + 1e-5)).epsilon(1e-7));
  CHECK(AdaLora<cpu>(kOut, kIn, config(3, 0.0f), RandomStream(3, 4)).scaling() == 3.0f);  // alpha <= 0 -> r
  CHECK(ada.trainable_count() == 3 * (kIn + kOut + 1));                                    // 48
  const auto params = ada.parameters();
  CHECK(params.at(0).name == "lora_A");
  CHECK(params.at(1).name == "lora_E");
  CHECK(params.at(2).name == "lora_B");
}

TEST_CASE("AdaLora forward adds c x (A * E)^T B^T") {
  AdaLora<cpu> ada(kOut, kIn, config(), RandomStream(1, 2));
  randomize_parameters(ada, 5);
  const HostMatrix x = random_matrix(kTokens, kIn, 6);
  HostMatrix y = random_matrix(kTokens, kOut, 7);
  HostMatrix expected = y;
  const double c = 8.0 / (3.0 + 1e-5);
  for (Index t = 0; t < kTokens; ++t)
    for (Index o = 0; o < kOut; ++o) {
      double acc = 0;
      for (Index k = 0; k < 3; ++k) {
        double h = 0;
        for (Index i = 0; i < kIn; ++i) h += double(x(t, i)) * ada.lora_A()(k, i) * ada.lora_E()(k, 0);
        acc += h * ada.lora_B()(o, k);
      }
      expected(t, o) = float(expected(t, o) + c * acc);
    }
  AdaLora<cpu>::Saved saved;
  ada.forward(y.view(), x.view(), saved);
  // Float sums of 9 and 3 O(1) terms, scaled by c ~ 2.7: ~1e-6 of the output scale.
  CHECK(relative_error(y.view(), expected.view()) < 1e-5);
}

TEST_CASE("AdaLora gradients match finite differences (E non-zero), with and without dropout") {
  AdaLora<cpu> ada(kOut, kIn, config(), RandomStream(1, 2));
  randomize_parameters(ada, 8);
  const HostMatrix x = random_matrix(kTokens, kIn, 9);
  check_gradients(ada, x, 10);
  check_accumulation(ada, x, 11);
  check_strided_operands(ada, x, 12);

  AdaLora<cpu> dropped(kOut, kIn, config(3, 8.0f, 0.3f), RandomStream(1, 2));
  randomize_parameters(dropped, 8);
  const std::uint64_t start = dropped.dropout_stream().offset();
  check_gradients(dropped, x, 12, [&] { dropped.dropout_stream().set_offset(start); });
  // Dropout changed the output, so the rewound masks were not all ones.
  dropped.set_training(false);
  const HostMatrix eval = adapter_output(dropped, x);
  dropped.set_training(true);
  CHECK(max_abs_diff(adapter_output(dropped, x).view(), eval.view()) > 1e-3);
}

TEST_CASE("AdaLora merge, unmerge and restriction") {
  AdaLora<cpu> ada(kOut, kIn, config(), RandomStream(1, 2));
  randomize_parameters(ada, 13);
  check_merge(ada, random_matrix(kTokens, kIn, 14), 15);
  const std::vector<std::int32_t> rows{1, 5}, cols{0, 4, 6, 7};
  const AdaLora<cpu> compact = ada.restricted(rows, cols);
  CHECK(compact.coefficient() == ada.coefficient());
  CHECK(compact.trainable_count() == 3 * (2 + 4 + 1));
  for (Index k = 0; k < 3; ++k) {
    CHECK(compact.lora_E()(k, 0) == ada.lora_E()(k, 0));
    for (Index j = 0; j < 4; ++j) CHECK(compact.lora_A()(k, j) == ada.lora_A()(k, cols[std::size_t(j)]));
    for (Index i = 0; i < 2; ++i) CHECK(compact.lora_B()(i, k) == ada.lora_B()(rows[std::size_t(i)], k));
  }
}

TEST_CASE("orthogonality regulariser: PEFT's mean of Frobenius norms and its gradient") {
  AdaLora<cpu> first(kOut, kIn, config(), RandomStream(1, 2));
  AdaLora<cpu> second(4, 5, config(2), RandomStream(1, 3));
  randomize_parameters(first, 16);
  randomize_parameters(second, 17);
  const std::vector<AdaLora<cpu>*> adapters{&first, &second};

  const double expected = 0.5 *
                          (deviation(first.lora_A(), true) + deviation(first.lora_B(), false) +
                           deviation(second.lora_A(), true) + deviation(second.lora_B(), false)) /
                          4.0;
  first.zero_grad();
  second.zero_grad();
  const double loss = adalora_orthogonal_regularization(adapters, 0.5f);
  // Float Gram matrices: ~1e-6 relative.
  CHECK(loss == doctest::Approx(expected).epsilon(1e-5));
  const HostMatrix d_first_a(first.lora_A_grad()), d_first_b(first.lora_B_grad()),
      d_second_a(second.lora_A_grad()), d_second_b(second.lora_B_grad());
  CHECK(max_abs(first.lora_E_grad()) == 0.0);

  // The norm is smooth away from zero: with h = 1e-2 the O(h^2) truncation is
  // ~1e-5 and the float rounding of the O(1) loss ~1e-6 / 2e-2; 2e-3 covers both.
  const auto value = [&] { return adalora_orthogonal_regularization(adapters, 0.5f); };
  CHECK(relative_error(d_first_a.view(), finite_difference(first.lora_A(), value).view()) < 2e-3);
  CHECK(relative_error(d_first_b.view(), finite_difference(first.lora_B(), value).view()) < 2e-3);
  CHECK(relative_error(d_second_a.view(), finite_difference(second.lora_A(), value).view()) < 2e-3);
  CHECK(relative_error(d_second_b.view(), finite_difference(second.lora_B(), value).view()) < 2e-3);

  CHECK(adalora_orthogonal_regularization<cpu>({}, 0.5f) == 0.0);
  CHECK_THROWS_WITH_AS(adalora_orthogonal_regularization(adapters, -1.0f),
                       doctest::Contains("orth_reg_weight = -1 must be finite and >= 0"), ValueError);
  CHECK_THROWS_AS(adalora_orthogonal_regularization(adapters, std::numeric_limits<float>::infinity()), ValueError);
}

TEST_CASE("orthogonality regulariser near orthogonal factors keeps its value and gradient") {
  // A = [I | 0] and B = [I ; 0] off by noise of 1e-4: ||G - I||_F ~ 1e-4 per
  // factor, a hundred times the float rounding of G's entries (~1e-7 absolute
  // each, k <= 9 products of O(1) terms), so 1e-2 relative holds for the value
  // and for the gradient 2 w (G - I) M / ||G - I|| (w = 0.5 / 2 for one adapter).
  AdaLora<cpu> ada(kOut, kIn, config(), RandomStream(1, 2));
  const HostMatrix noise_a = random_matrix(3, kIn, 5, -1e-4f, 1e-4f), noise_b = random_matrix(kOut, 3, 6, -1e-4f, 1e-4f);
  for (Index k = 0; k < 3; ++k) {
    for (Index i = 0; i < kIn; ++i) ada.lora_A()(k, i) = (k == i ? 1.0f : 0.0f) + noise_a(k, i);
    for (Index o = 0; o < kOut; ++o) ada.lora_B()(o, k) = (k == o ? 1.0f : 0.0f) + noise_b(o, k);
  }
  ada.zero_grad();
  const double loss = adalora_orthogonal_regularization<cpu>({&ada}, 0.5f);
  const double norm_a = deviation(ada.lora_A(), true), norm_b = deviation(ada.lora_B(), false);
  REQUIRE(norm_a > 1e-5);
  REQUIRE(norm_b > 1e-5);
  CHECK(loss == doctest::Approx(0.25 * (norm_a + norm_b)).epsilon(1e-2));
  // Gradient of lora_A in double: 2 w (A A^T - I) A / norm_a.
  HostMatrix expected_a(3, kIn);
  for (Index k = 0; k < 3; ++k)
    for (Index i = 0; i < kIn; ++i) {
      double sum = 0;
      for (Index j = 0; j < 3; ++j) {
        double g = 0;
        for (Index p = 0; p < kIn; ++p) g += double(ada.lora_A()(k, p)) * ada.lora_A()(j, p);
        sum += (g - (k == j)) * ada.lora_A()(j, i);
      }
      expected_a(k, i) = static_cast<float>(2.0 * 0.25 * sum / norm_a);
    }
  CHECK(relative_error(ada.lora_A_grad(), expected_a.view()) < 1e-2);
}

TEST_CASE("RankAllocator budget schedule follows PEFT's cubic schedule") {
  AdaLora<cpu> a(kOut, kIn, config(6), RandomStream(1, 2)), b(kOut, kIn, config(6), RandomStream(1, 3));
  AdaLoraConfig schedule = config(6);
  schedule.target_r = 4;
  schedule.total_step = 100;
  schedule.tinit = 10;
  schedule.tfinal = 20;
  schedule.deltaT = 5;
  const RankAllocator<cpu> allocator({&a, &b}, schedule);
  CHECK(allocator.initial_budget() == 12);
  CHECK(allocator.target_budget() == 8);
  // Budgeting runs over steps 11..80 (T - tfinal), a span of 70 steps:
  // b(t) = int(4 (1 - (t - 10) / 70)^3 + 8).
  const auto expect = [&](Index step, Index budget, bool mask) {
    INFO("step ", step);
    CHECK(allocator.budget_at(step).total == budget);
    CHECK(allocator.budget_at(step).mask_now == mask);
  };
  expect(0, 12, false);
  expect(10, 12, false);  // warm-up includes t = tinit
  expect(11, 11, false);  // 4 (69/70)^3 = 3.831 -> 11; 11 % 5 != 0
  expect(15, 11, true);   // 4 (13/14)^3 = 3.203 -> 11
  expect(30, 9, true);    // 4 (5/7)^3 = 1.458 -> 9
  expect(45, 8, true);    // 4 (1/2)^3 = 0.5 -> 8
  expect(79, 8, false);   // 4 (1/70)^3 ~ 1e-5 -> 8
  expect(80, 8, true);    // end of the budgeting phase
  expect(81, 8, true);    // final phase: target, masked
  expect(100, 8, true);
}

TEST_CASE("RankAllocator masks the lowest triplet scores, computed by hand") {
  // Two 2 x 2 adapters, init_r 2, target_r 1: budgets 4 -> 2. At step 4 of
  // T = 10 (tinit = tfinal = 0): int(2 (1 - 4/10)^3 + 2) = int(2.432) = 2, so k = 4 - 2 = 2
  // triplets are masked. With beta1 = beta2 = 0.5 and one update from zero:
  // Ibar = I / 2, U = |I - I/2| / 2 = I / 4, score = I^2 / 8 with I = |p g|.
  AdaLoraConfig c = config(2);
  c.target_r = 1;
  c.total_step = 10;
  c.beta1 = 0.5f;
  c.beta2 = 0.5f;
  AdaLora<cpu> first(2, 2, c, RandomStream(1, 2)), second(2, 2, c, RandomStream(1, 3));
  for (AdaLora<cpu>* adapter : {&first, &second})
    for (auto& p : adapter->parameters()) cpu::fill(p.value, p.name == "lora_A" ? -1.0f : 1.0f);
  // first: I_A = [[1, 3], [2, 2]] -> row means of I^2: 5, 4; I_E^2 = 4, 0;
  //        I_B = [[0, 1], [2, 1]] -> column means of I^2: 2, 1.  Triplets: (4+5+2)/8 = 1.375, (0+4+1)/8 = 0.625
  set(param(first, "lora_A").grad, {1, -3, 2, 2});
  set(param(first, "lora_E").grad, {2, 0});
  set(param(first, "lora_B").grad, {0, 1, -2, 1});
  // second: I_A = [[0, 0], [1, 1]] -> 0, 1; I_E^2 = 1, 9; I_B = [[1, 0], [1, 2]] -> 1, 2.
  //        Triplets: (1+0+1)/8 = 0.25, (9+1+2)/8 = 1.5
  set(param(second, "lora_A").grad, {0, 0, 1, -1});
  set(param(second, "lora_E").grad, {1, 3});
  set(param(second, "lora_B").grad, {1, 0, 1, 2});

  RankAllocator<cpu> allocator({&first, &second}, c);
  const auto step = allocator.update_and_mask(4);
  CHECK(step.total == 2);
  CHECK(step.mask_now);
  // The 2nd smallest score, 0.625, is the threshold: first's triplet 1 and second's triplet 0 go.
  const auto& scores = allocator.triplet_scores();
  REQUIRE(scores.size() == 2);
  CHECK(scores.at(0).at(0) == doctest::Approx(1.375));
  CHECK(allocator.rank_pattern() == std::vector<std::vector<bool>>{{true, false}, {false, true}});
  CHECK(first.lora_E()(0, 0) == 1.0f);
  CHECK(first.lora_E()(1, 0) == 0.0f);
  CHECK(second.lora_E()(0, 0) == 0.0f);
  CHECK(second.lora_E()(1, 0) == 1.0f);
  CHECK(allocator.sensitivity(0, 'A')(0, 1) == doctest::Approx(1.5));   // 0.5 * 3
  CHECK(allocator.uncertainty(0, 'A')(0, 1) == doctest::Approx(0.75));  // 0.5 * |3 - 1.5|
  CHECK(scores.at(0).at(1) == doctest::Approx(0.625));
  CHECK(scores.at(1).at(0) == doctest::Approx(0.25));
  CHECK(scores.at(1).at(1) == doctest::Approx(1.5));
}

TEST_CASE("RankAllocator EMAs, skipped mask steps and the frozen final pattern") {
  // One adapter (out 2, in 2, init_r 2, target_r 1): budgets 2 -> 1; T = 10,
  // tfinal = 2, so budgeting ends at F = 8; deltaT = 3 masks only when t % 3 == 0.
  AdaLoraConfig c = config(2);
  c.target_r = 1;
  c.total_step = 10;
  c.tfinal = 2;
  c.deltaT = 3;
  c.beta1 = 0.5f;
  c.beta2 = 0.5f;
  AdaLora<cpu> ada(2, 2, c, RandomStream(1, 2));
  for (auto& p : ada.parameters()) cpu::fill(p.value, 1.0f);
  // Triplet 0 important (I_E = 4), triplet 1 not; A and B grads zero.
  for (auto& p : ada.parameters()) cpu::fill(p.grad, 0.0f);
  set(param(ada, "lora_E").grad, {4, 0});
  RankAllocator<cpu> allocator({&ada}, c);

  // Step 1: budget int(1 (7/8)^3 + 1) = 1 but 1 % 3 != 0: statistics only.
  CHECK_FALSE(allocator.update_and_mask(1).mask_now);
  CHECK(ada.lora_E()(1, 0) == 1.0f);
  CHECK(allocator.sensitivity(0, 'E')(0, 0) == doctest::Approx(2.0));  // 0.5 * 4
  // Step 2 with the same grads: Ibar = 0.5 * 2 + 0.5 * 4 = 3, U = 0.5 * 1 + 0.5 * |4 - 3| = 1.
  CHECK_FALSE(allocator.update_and_mask(2).mask_now);
  CHECK(allocator.sensitivity(0, 'E')(0, 0) == doctest::Approx(3.0));
  CHECK(allocator.uncertainty(0, 'E')(0, 0) == doctest::Approx(1.0));
  // Step 3 masks: Ibar = 3.5, U = 0.5 * 1 + 0.5 * 0.5 = 0.75; score 2.625 vs 0 -> triplet 1 goes.
  CHECK(allocator.update_and_mask(3).mask_now);
  CHECK(allocator.triplet_scores().at(0).at(0) == doctest::Approx(3.5 * 0.75));
  CHECK(ada.lora_E()(1, 0) == 0.0f);
  CHECK(ada.lora_E()(0, 0) == 1.0f);

  // Step 8 = F: mask to the target with the current statistics, freeze, reset.
  CHECK(allocator.update_and_mask(8).mask_now);
  CHECK(allocator.frozen());
  CHECK(allocator.sensitivity(0, 'E')(0, 0) == 0.0f);
  CHECK(allocator.rank_pattern() == std::vector<std::vector<bool>>{{true, false}});
  // Training revives E[1] and the gradients now favour triplet 1; step 9 re-applies the frozen pattern.
  cpu::fill(param(ada, "lora_E").value, 1.0f);
  set(param(ada, "lora_E").grad, {0, 4});
  CHECK(allocator.update_and_mask(9).mask_now);
  CHECK(ada.lora_E()(0, 0) == 1.0f);
  CHECK(ada.lora_E()(1, 0) == 0.0f);

  // A fresh allocator first called at or past F has no statistics to freeze a
  // pattern from (all triplets would tie and go): refused, E untouched.
  for (const Index first_call : {8, 9}) {
    RankAllocator<cpu> late({&ada}, c);
    CHECK_THROWS_WITH_AS(late.update_and_mask(first_call),
                         doctest::Contains("at or past the final budgeting step total_step - tfinal = 8"), ValueError);
    CHECK(ada.lora_E()(0, 0) == 1.0f);
  }
}

static_assert(CheckpointState<RankAllocator<cpu>>);

TEST_CASE("RankAllocator state exported mid-run continues exactly in a fresh allocator") {
  // Two adapters (init_r 3 -> target_r 1, F = 8, masks every 2nd step); the
  // gradients change every step so that the EMAs, masks and frozen pattern
  // depend on the whole history.
  AdaLoraConfig c = config(3);
  c.target_r = 1;
  c.total_step = 12;
  c.tfinal = 4;
  c.deltaT = 2;
  const auto run = [&](AdaLora<cpu>& first, AdaLora<cpu>& second, RankAllocator<cpu>& allocator, Index from,
                       Index to) {
    for (Index step = from; step < to; ++step) {
      for (AdaLora<cpu>* ada : {&first, &second}) {
        randomize_parameters(*ada, 100 + std::uint64_t(step));  // values and grads of this step
        for (auto& p : ada->parameters())
          cpu::copy(p.grad, random_matrix(p.grad.rows, p.grad.cols, 200 + std::uint64_t(step), -1.0f, 1.0f, 3).view());
      }
      allocator.update_and_mask(step);
    }
  };
  AdaLora<cpu> a1(kOut, kIn, c, RandomStream(1, 2)), b1(4, 5, c, RandomStream(1, 3));
  RankAllocator<cpu> straight({&a1, &b1}, c);
  run(a1, b1, straight, 1, 12);

  for (const Index k : {Index{5}, Index{9}}) {  // before F, and past it with the pattern frozen
    CAPTURE(k);
    AdaLora<cpu> a2(kOut, kIn, c, RandomStream(1, 2)), b2(4, 5, c, RandomStream(1, 3));
    RankAllocator<cpu> before({&a2, &b2}, c);
    run(a2, b2, before, 1, k);
    const StateTensors saved = before.export_state();
    AdaLora<cpu> a3(kOut, kIn, c, RandomStream(1, 2)), b3(4, 5, c, RandomStream(1, 3));
    RankAllocator<cpu> resumed({&a3, &b3}, c);
    resumed.import_state(saved);
    run(a3, b3, resumed, k, 12);
    CHECK(resumed.rank_pattern() == straight.rank_pattern());
    CHECK(HostMatrix(a3.lora_E()).values() == HostMatrix(a1.lora_E()).values());
    CHECK(HostMatrix(b3.lora_E()).values() == HostMatrix(b1.lora_E()).values());
    for (const char factor : {'A', 'E', 'B'})
      CHECK(resumed.sensitivity(1, factor).values() == straight.sensitivity(1, factor).values());
  }
  // Without the state the resumed allocator past F has nothing to freeze from.
  AdaLora<cpu> a4(kOut, kIn, c, RandomStream(1, 2)), b4(4, 5, c, RandomStream(1, 3));
  RankAllocator<cpu> blank({&a4, &b4}, c);
  CHECK_THROWS_AS(run(a4, b4, blank, 9, 12), ValueError);

  // Bad states are refused before anything changes.
  StateTensors missing = straight.export_state();
  missing.erase("1.B.unc");
  CHECK_THROWS_WITH_AS(straight.check_state(missing), doctest::Contains("14 tensors, expected 15"), ValueError);
  StateTensors flag = straight.export_state();
  flag.at("phase")(0, 0) = 0.5f;
  CHECK_THROWS_WITH_AS(straight.import_state(flag), doctest::Contains("'phase' holds 0.5, expected 0 or 1"), ValueError);
  CHECK(straight.frozen());
  StateTensors negative = straight.export_state();
  negative.at("0.A.ibar")(0, 0) = -1.0f;
  CHECK_THROWS_WITH_AS(straight.check_state(negative), doctest::Contains("expected a finite value >= 0"), ValueError);
}

TEST_CASE("RankAllocator on Partial<AdaLora>: triplet means over kept entries only") {
  // out 3, in 3, kept rows {0, 2}, kept cols {1}: compact A is 2 x 1, B is 2 x 2.
  AdaLoraConfig c = config(2);
  c.target_r = 1;
  c.total_step = 10;
  c.beta1 = 0.5f;
  c.beta2 = 0.5f;
  PartialAdaLora<cpu> partial(3, 3, {c, {0, 2}, {1}}, RandomStream(4, 5));
  AdaLora<cpu>& inner = partial.inner();
  for (auto& p : inner.parameters()) cpu::fill(p.value, 1.0f);
  // I_A = [[2], [1]] -> means of I^2 over the 1 kept column: 4, 1;
  // I_B = [[1, 0], [1, 2]] -> means over the 2 kept rows: 1, 2; E grads 0.
  // Scores (x 1/8): 5/8 and 3/8. Budget at step 5: int(1 * 0.125 + 1) = 1 -> mask one triplet (the second).
  set(param(inner, "lora_A").grad, {2, 1});
  set(param(inner, "lora_E").grad, {0, 0});
  set(param(inner, "lora_B").grad, {1, 0, 1, 2});
  RankAllocator<cpu> allocator({&inner}, c);
  CHECK(allocator.update_and_mask(5).total == 1);
  CHECK(allocator.triplet_scores().at(0).at(0) == doctest::Approx(5.0 / 8.0));
  CHECK(allocator.triplet_scores().at(0).at(1) == doctest::Approx(3.0 / 8.0));
  CHECK(inner.lora_E()(0, 0) == 1.0f);
  CHECK(inner.lora_E()(1, 0) == 0.0f);
}

TEST_CASE("AdaLora and RankAllocator reject bad configs with messages naming them") {
  const RandomStream init(1, 2);
  CHECK_THROWS_WITH_AS(AdaLora<cpu>(kOut, kIn, config(0), init),
                       doctest::Contains("init_r = 0 is outside [1, min(out, in)] = [1, 6]"), ValueError);
  CHECK_THROWS_WITH_AS(AdaLora<cpu>(kOut, kIn, config(7), init), doctest::Contains("init_r = 7"), ValueError);
  CHECK_THROWS_WITH_AS(AdaLora<cpu>(kOut, kIn, config(3, 8.0f, 1.5f), init), doctest::Contains("dropout = 1.5"),
                       ValueError);

  AdaLora<cpu> ada(kOut, kIn, config(), init);
  AdaLoraConfig c = config();
  c.total_step = 0;
  CHECK_THROWS_WITH_AS(RankAllocator<cpu>({&ada}, c), doctest::Contains("total_step = 0 must be > 0"), ValueError);
  c.total_step = 10;
  c.tinit = 5;
  c.tfinal = 5;
  CHECK_THROWS_WITH_AS(RankAllocator<cpu>({&ada}, c), doctest::Contains("tinit = 5 must be < total_step - tfinal = 5"),
                       ValueError);
  c.tinit = 0;
  c.beta1 = 1.0f;
  CHECK_THROWS_WITH_AS(RankAllocator<cpu>({&ada}, c), doctest::Contains("beta1 = 1"), ValueError);
  c.beta1 = 0.85f;
  c.target_r = 4;
  CHECK_THROWS_WITH_AS(RankAllocator<cpu>({&ada}, c), doctest::Contains("target_r = 4"), ValueError);
  c.target_r = 1;
  c.deltaT = 0;
  CHECK_THROWS_WITH_AS(RankAllocator<cpu>({&ada}, c), doctest::Contains("deltaT = 0"), ValueError);
  c.deltaT = 1;
  CHECK_THROWS_WITH_AS(RankAllocator<cpu>({}, c), doctest::Contains("no AdaLora adapters"), ValueError);
}
