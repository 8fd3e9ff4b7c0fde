// FullDelta (full fine-tuning as an adapter) and RandomMasking (a fixed random
// sparse support of ΔW): forward, gradients, support selection, the masked
// entries staying zero under AdamW with weight decay, merging, bad input.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "adapters/adapter_testing.hpp"
#include "plora/nn/linear_site.hpp"

using namespace plora;
using namespace plora::test;

namespace {
constexpr Index kOut = 6, kIn = 9, kTokens = 5;

/// A site folding `adapter` into its GEMMs (x (W + ΔW)^T, dy (W + ΔW)) against
/// the frozen GEMMs plus an unfolded copy of the adapter applied on its own.
template <class A>
void check_folded_site(A adapter) {
  randomize_parameters(adapter, 21);
  const HostMatrix w = random_matrix(kOut, kIn, 22), bias = random_matrix(1, kOut, 23);
  const HostMatrix x = random_matrix(kTokens, kIn, 24), dy = random_matrix(kTokens, kOut, 25);
  A reference = adapter;
  typename A::Saved reference_saved;
  HostMatrix y_expected(kTokens, kOut), dx_expected(kTokens, kIn);
  cpu::gemm(y_expected.view(), x.view(), Op::N, w.view(), Op::T, 1.0f, 0.0f);
  cpu::add_row_vector(y_expected.view(), bias.view());
  reference.forward(y_expected.view(), x.view(), reference_saved);
  cpu::gemm(dx_expected.view(), dy.view(), Op::N, w.view(), Op::N, 1.0f, 0.0f);
  reference.backward(dx_expected.view(), dy.view(), x.view(), reference_saved);

  LinearSite<cpu, A> site("folded", w, bias);
  site.attach(adapter);
  typename LinearSite<cpu, A>::Saved saved;
  HostMatrix y(kTokens, kOut), dx(kTokens, kIn);
  site.forward(y.view(), x.view(), saved);
  site.backward(dx.view(), dy.view(), x.view(), saved);
  HostMatrix expected_fold = w, fold(kOut, kIn);
  cpu::axpy(expected_fold.view(), 1.0f, reference.delta().view());
  site.adapter().fold_into(fold.view(), w.view());
  CHECK(max_abs_diff(fold.view(), expected_fold.view()) == 0.0);
  // One GEMM over W + ΔW instead of two: 9-term float sums of O(1) terms
  // rounded differently, a few ulps of the O(3) results.
  CHECK(relative_error(y.view(), y_expected.view()) < 1e-5);
  CHECK(relative_error(dx.view(), dx_expected.view()) < 1e-5);
  // The parameter grad is the same dy^T x GEMM on both sides.
  CHECK(max_abs_diff(site.adapter().parameters().at(0).grad, reference.parameters().at(0).grad) == 0.0);
}
}  // namespace

TEST_CASE("FullDelta starts at zero, adds x dW^T and trains every entry") {
  FullDelta<cpu> full(kOut, kIn, {}, RandomStream(1, 2));
  CHECK(max_abs(full.delta_W()) == 0.0);
  CHECK(full.trainable_count() == kOut * kIn);
  CHECK(full.parameters().at(0).name == "delta_W");
  randomize_parameters(full, 3);
  const HostMatrix x = random_matrix(kTokens, kIn, 4);
  const HostMatrix y = adapter_output(full, x);
  double worst = 0;
  for (Index t = 0; t < kTokens; ++t)
    for (Index o = 0; o < kOut; ++o) {
      double acc = 0;
      for (Index i = 0; i < kIn; ++i) acc += double(x(t, i)) * full.delta_W()(o, i);
      worst = std::max(worst, std::abs(acc - y(t, o)));
    }
  CHECK(worst < 1e-5);  // 9-term float sums of O(1) terms
  check_gradients(full, x, 5);
  check_accumulation(full, x, 6);
  check_strided_operands(full, x, 6);
  check_merge(full, x, 7);

  FullDelta<cpu>::Saved saved;
  HostMatrix wrong_x(kTokens, kIn + 2), out(kTokens, kOut);
  CHECK_THROWS_WITH_AS(full.forward(out.view(), wrong_x.view(), saved),
                       doctest::Contains("FullDelta forward: x has 11 columns, expected in_features = 9"), ShapeError);
  CHECK_THROWS_WITH_AS(FullDelta<cpu>(kOut, 0, {}, RandomStream(1, 2)), doctest::Contains("at least 1 x 1"),
                       ShapeError);
}

TEST_CASE("RandomMasking support: uniform_at(seed, stream, r * in + c) < density, counted as trainable") {
  const Index out = 20, in = 30;
  const RandomStream init(77, 5);
  RandomMasking<cpu> masking(out, in, {.density = 0.1}, init);
  Index expected_count = 0;
  bool same = true;
  for (Index r = 0; r < out; ++r)
    for (Index c = 0; c < in; ++c) {
      const float draw = RandomStream::uniform_at(77, 5, static_cast<std::uint64_t>(r * in + c));
      const bool kept = static_cast<double>(draw) < 0.1;
      expected_count += kept;
      same = same && masking.mask()(r, c) == (kept ? 1.0f : 0.0f);
    }
  CHECK(same);
  CHECK(masking.trainable_count() == expected_count);
  // 600 Bernoulli(0.1) draws: 60 expected, standard deviation ~7.
  CHECK(expected_count > 30);
  CHECK(expected_count < 90);
  CHECK(max_abs(masking.delta_W()) == 0.0);
  CHECK(masking.parameters().at(0).name == "delta_W");

  CHECK(RandomMasking<cpu>(out, in, {.density = 1.0}, init).trainable_count() == out * in);
  RandomMasking<cpu> other(out, in, {.density = 0.1}, RandomStream(77, 6));
  CHECK(max_abs_diff(other.mask(), masking.mask()) == 1.0);  // another stream, another support
}

TEST_CASE("RandomMasking is never empty: it keeps the entry with the smallest draw") {
  const RandomStream init(3, 9);
  RandomMasking<cpu> masking(2, 3, {.density = 1e-12}, init);
  CHECK(masking.trainable_count() == 1);
  Index argmin = 0;
  for (Index i = 1; i < 6; ++i)
    if (RandomStream::uniform_at(3, 9, std::uint64_t(i)) < RandomStream::uniform_at(3, 9, std::uint64_t(argmin)))
      argmin = i;
  CHECK(masking.mask()(argmin / 3, argmin % 3) == 1.0f);
}

TEST_CASE("RandomMasking gradients are the dense ones on the support and zero elsewhere") {
  RandomMasking<cpu> masking(kOut, kIn, {.density = 0.5}, RandomStream(8, 1));
  randomize_parameters(masking, 9);
  cpu::mul(masking.delta_W(), masking.mask());  // values live on the support only
  const HostMatrix mask(masking.mask());
  const HostMatrix x = random_matrix(kTokens, kIn, 10);
  check_gradients(masking, x, 11, {}, [&](const std::string&, HostMatrix& numeric) {
    cpu::mul(numeric.view(), mask.view());
  });
  check_accumulation(masking, x, 12);
  check_strided_operands(masking, x, 12);
  check_merge(masking, x, 13);
  const HostMatrix grad(masking.parameters().at(0).grad);
  bool zero_off_support = true;
  for (Index r = 0; r < kOut; ++r)
    for (Index c = 0; c < kIn; ++c) zero_off_support = zero_off_support && (mask(r, c) == 1.0f || grad(r, c) == 0.0f);
  CHECK(zero_off_support);
}

TEST_CASE("RandomMasking entries off the support stay exactly zero under AdamW with weight decay") {
  RandomMasking<cpu> masking(kOut, kIn, {.density = 0.3}, RandomStream(4, 4));
  const HostMatrix mask(masking.mask());
  auto param = masking.parameters().at(0);
  HostMatrix m(kOut, kIn), v(kOut, kIn);
  for (int step = 1; step <= 5; ++step) {
    const HostMatrix x = random_matrix(kTokens, kIn, 40 + step), dy = random_matrix(kTokens, kOut, 50 + step);
    HostMatrix y(kTokens, kOut);
    RandomMasking<cpu>::Saved saved;
    masking.zero_grad();
    masking.forward(y.view(), x.view(), saved);
    masking.backward(HostView{}, dy.view(), x.view(), saved);
    AdamWStep adam{.lr = 0.1f, .weight_decay = 0.1f};
    adam.bias_correction1 = 1.0f - std::pow(adam.beta1, float(step));
    adam.bias_correction2 = 1.0f - std::pow(adam.beta2, float(step));
    cpu::adamw_step(param.value, param.grad, m.view(), v.view(), adam);
  }
  Index moved = 0;
  bool zero_off_support = true;
  for (Index r = 0; r < kOut; ++r)
    for (Index c = 0; c < kIn; ++c) {
      if (mask(r, c) == 0.0f) zero_off_support = zero_off_support && param.value(r, c) == 0.0f;
      moved += mask(r, c) == 1.0f && param.value(r, c) != 0.0f;
    }
  CHECK(zero_off_support);
  CHECK(moved == masking.trainable_count());
}

TEST_CASE("RandomMasking rejects densities outside (0, 1]") {
  const RandomStream init(1, 2);
  CHECK_THROWS_WITH_AS(RandomMasking<cpu>(kOut, kIn, {.density = 0.0}, init),
                       doctest::Contains("density = 0 is outside (0, 1]"), ValueError);
  CHECK_THROWS_WITH_AS(RandomMasking<cpu>(kOut, kIn, {.density = 1.5}, init), doctest::Contains("density = 1.5"),
                       ValueError);
  CHECK_THROWS_AS(RandomMasking<cpu>(kOut, kIn, {.density = std::numeric_limits<double>::quiet_NaN()}, init),
                  ValueError);
}

TEST_CASE("a site folds FullDelta and RandomMasking into its own GEMMs: the same outputs and gradients") {
  static_assert(FoldableAdapter<FullDelta<cpu>> && FoldableAdapter<RandomMasking<cpu>> && !FoldableAdapter<Lora<cpu>>);
  check_folded_site(FullDelta<cpu>(kOut, kIn, {}, RandomStream(1, 2)));
  check_folded_site(RandomMasking<cpu>(kOut, kIn, {.density = 0.5}, RandomStream(1, 3)));
}

TEST_CASE("sites sharing one fold buffer, run in a model's order, give what each gives with its own") {
  // x -> small -> large -> y, then back: each GEMM must read the W + ΔW of its
  // own site, formed just before it, whatever the other site formed last. The
  // large site needs more elements than the small one: the buffer grows
  // between the two forwards. Both runs do the same float operations, so they
  // agree bitwise.
  using Site = LinearSite<cpu, FullDelta<cpu>>;
  constexpr Index kWide = 3 * kOut + 1;
  const auto make_site = [](Index out, Index in, std::uint64_t seed) {
    FullDelta<cpu> full(out, in, {}, RandomStream(seed, 0));
    randomize_parameters(full, seed);
    Site site("site" + std::to_string(seed), random_matrix(out, in, seed + 1), random_matrix(1, out, seed + 2));
    site.attach(full);
    return site;
  };
  const HostMatrix x = random_matrix(kTokens, kIn, 30), dy = random_matrix(kTokens, kWide, 31);
  struct Run {
    HostMatrix y, dh, dx, small_grad, large_grad;
  };
  const auto run = [&](Site small, Site large) {
    Site::Saved small_saved, large_saved;
    HostMatrix h(kTokens, kOut), y(kTokens, kWide), dh(kTokens, kOut), dx(kTokens, kIn);
    small.forward(h.view(), x.view(), small_saved);
    large.forward(y.view(), h.view(), large_saved);
    large.backward(dh.view(), dy.view(), h.view(), large_saved);
    small.backward(dx.view(), dh.view(), x.view(), small_saved);
    return Run{y, dh, dx, HostMatrix(small.adapter().delta_W_grad()), HostMatrix(large.adapter().delta_W_grad())};
  };
  const Run own = run(make_site(kOut, kIn, 40), make_site(kWide, kOut, 50));
  Site small = make_site(kOut, kIn, 40), large = make_site(kWide, kOut, 50);
  static_assert(kOut * kIn < kWide * kOut);
  const auto buffer = std::make_shared<Site::FoldBuffer>();
  small.share_fold_buffer(buffer);
  large.share_fold_buffer(buffer);
  const Run shared = run(small, large);
  CHECK(max_abs_diff(shared.y.view(), own.y.view()) == 0.0);
  CHECK(max_abs_diff(shared.dh.view(), own.dh.view()) == 0.0);
  CHECK(max_abs_diff(shared.dx.view(), own.dx.view()) == 0.0);
  CHECK(max_abs_diff(shared.small_grad.view(), own.small_grad.view()) == 0.0);
  CHECK(max_abs_diff(shared.large_grad.view(), own.large_grad.view()) == 0.0);
  CHECK(max_abs(shared.dx.view()) > 0.0);
}
