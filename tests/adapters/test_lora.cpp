// Lora: PEFT initialisation and scaling, forward against naive loops, gradients
// against finite differences, input dropout, merging, restriction, bad input.
#include <doctest/doctest.h>

#include <cmath>

#include "adapters/adapter_testing.hpp"

using namespace plora;
using namespace plora::test;

namespace {
constexpr Index kOut = 6, kIn = 9, kTokens = 5;

LoraConfig config(Index rank = 3, float alpha = 6.0f, float dropout = 0.0f) {
  return {.rank = rank, .alpha = alpha, .use_rslora = false, .dropout = dropout};
}

/// y0 + s · x (x A^T B^T) by loops in double.
HostMatrix naive_lora(const HostMatrix& y0, const HostMatrix& x, ConstHostView a, ConstHostView b, double s) {
  HostMatrix y = y0;
  for (Index t = 0; t < x.rows(); ++t)
    for (Index o = 0; o < b.rows; ++o) {
      double acc = 0;
      for (Index k = 0; k < a.rows; ++k) {
        double h = 0;
        for (Index i = 0; i < x.cols(); ++i) h += double(x(t, i)) * a(k, i);
        acc += h * b(o, k);
      }
      y(t, o) = float(y(t, o) + s * acc);
    }
  return y;
}
}  // namespace

TEST_CASE("Lora initialises like PEFT: A ~ U(+-1/sqrt(in)) row-major from the stream, B = 0") {
  const RandomStream init(11, 22);
  Lora<cpu> lora(kOut, kIn, config(), init);
  REQUIRE(lora.lora_A().rows == 3);
  REQUIRE(lora.lora_A().cols == kIn);
  REQUIRE(lora.lora_B().rows == kOut);
  REQUIRE(lora.lora_B().cols == 3);
  // Kaiming-uniform with a = sqrt(5): gain sqrt(2 / 6), bound gain * sqrt(3 / in) = 1 / sqrt(9) = 1/3.
  RandomStream draws(11, 22);
  const float bound = 1.0f / 3.0f;
  for (Index k = 0; k < 3; ++k)
    for (Index i = 0; i < kIn; ++i) {
      const float expected = std::fma(2.0f * bound, draws.uniform(), -bound);  // uniform(low, high), rounded once
      CHECK(lora.lora_A()(k, i) == expected);
      CHECK(std::abs(lora.lora_A()(k, i)) <= bound);
    }
  CHECK(max_abs(lora.lora_B()) == 0.0);
  CHECK(lora.scaling() == doctest::Approx(6.0 / 3.0));
  CHECK(lora.trainable_count() == 3 * (kOut + kIn));  // 45
  CHECK(lora.parameters().at(0).name == "lora_A");
  CHECK(lora.parameters().at(1).name == "lora_B");

  LoraConfig rs = config();
  rs.use_rslora = true;
  CHECK(Lora<cpu>(kOut, kIn, rs, init).scaling() == doctest::Approx(6.0 / std::sqrt(3.0)));
  // A zero B means the fresh adapter adds nothing.
  const HostMatrix x = random_matrix(kTokens, kIn, 1);
  CHECK(max_abs(adapter_output(lora, x).view()) == 0.0);
}

TEST_CASE("Lora forward adds s x A^T B^T to y") {
  Lora<cpu> lora(kOut, kIn, config(), RandomStream(1, 2));
  randomize_parameters(lora, 3);
  const HostMatrix x = random_matrix(kTokens, kIn, 4);
  HostMatrix y = random_matrix(kTokens, kOut, 5);
  const HostMatrix expected = naive_lora(y, x, lora.lora_A(), lora.lora_B(), 2.0);
  Lora<cpu>::Saved saved;
  lora.forward(y.view(), x.view(), saved);
  // 9- and 3-term float sums of O(1) terms.
  CHECK(max_abs_diff(y.view(), expected.view()) < 1e-5);
}

TEST_CASE("Lora gradients match finite differences, accumulate, and skip an empty dx") {
  Lora<cpu> lora(kOut, kIn, config(), RandomStream(1, 2));
  randomize_parameters(lora, 6);
  const HostMatrix x = random_matrix(kTokens, kIn, 7);
  check_gradients(lora, x, 8);
  check_accumulation(lora, x, 9);
  check_strided_operands(lora, x, 10);
}

TEST_CASE("Lora gradients through input dropout in training mode") {
  Lora<cpu> lora(kOut, kIn, config(3, 6.0f, 0.4f), RandomStream(1, 2));
  randomize_parameters(lora, 10);
  const std::uint64_t start = lora.dropout_stream().offset();
  // Every forward must see the same mask for finite differences to make sense.
  check_gradients(lora, random_matrix(kTokens, kIn, 11), 12, [&] { lora.dropout_stream().set_offset(start); });
}

TEST_CASE("Lora dropout: inverted mask from the adapter's stream, off in eval mode, deterministic per seed") {
  const float p = 0.5f;
  Lora<cpu> lora(kOut, kIn, config(3, 6.0f, p), RandomStream(5, 6));
  Lora<cpu> twin(kOut, kIn, config(3, 6.0f, p), RandomStream(5, 6));
  Lora<cpu> plain(kOut, kIn, config(3, 6.0f, 0.0f), RandomStream(5, 6));
  randomize_parameters(lora, 13);
  randomize_parameters(twin, 13);
  randomize_parameters(plain, 13);
  const HostMatrix x = random_matrix(kTokens, kIn, 14);
  CHECK(lora.training());  // like a fresh torch module

  // The branch sees x ⊙ mask, mask from B::dropout_mask at the stream's offset.
  const RandomStream before = lora.dropout_stream();
  HostMatrix mask(kTokens, kIn);
  cpu::dropout_mask(mask.view(), p, before.seed(), before.stream(), before.offset());
  HostMatrix dropped = x;
  cpu::mul(dropped.view(), mask.view());
  const HostMatrix first = adapter_output(lora, x);
  CHECK(max_abs_diff(first.view(), naive_lora(HostMatrix(kTokens, kOut), dropped, lora.lora_A(), lora.lora_B(), 2.0)
                                       .view()) < 1e-5);
  CHECK(lora.dropout_stream().offset() == before.offset() + kTokens * kIn);
  // Some entries dropped, some kept and scaled by 1 / (1 - p) = 2.
  CHECK(max_abs(mask.view()) == 2.0);
  CHECK(cpu::sum_squares(mask.view()) < 4.0 * kTokens * kIn);

  // Same seed, same masks; the next forward draws a new mask; rewinding repeats it.
  CHECK(max_abs_diff(adapter_output(twin, x).view(), first.view()) == 0.0);
  CHECK(max_abs_diff(adapter_output(lora, x).view(), first.view()) > 1e-3);
  lora.dropout_stream().set_offset(before.offset());
  CHECK(max_abs_diff(adapter_output(lora, x).view(), first.view()) == 0.0);

  // Eval mode: no dropout, the stream does not move.
  lora.set_training(false);
  const std::uint64_t offset = lora.dropout_stream().offset();
  CHECK(max_abs_diff(adapter_output(lora, x).view(), adapter_output(plain, x).view()) == 0.0);
  CHECK(lora.dropout_stream().offset() == offset);
}

TEST_CASE("Lora merge, unmerge and delta = s B A") {
  Lora<cpu> lora(kOut, kIn, config(), RandomStream(1, 2));
  randomize_parameters(lora, 15);
  check_merge(lora, random_matrix(kTokens, kIn, 16), 17);
  const HostMatrix delta = lora.delta();
  double worst = 0;
  for (Index o = 0; o < kOut; ++o)
    for (Index i = 0; i < kIn; ++i) {
      double acc = 0;
      for (Index k = 0; k < 3; ++k) acc += double(lora.lora_B()(o, k)) * lora.lora_A()(k, i);
      worst = std::max(worst, std::abs(2.0 * acc - delta(o, i)));
    }
  CHECK(worst < 1e-5);
}

TEST_CASE("Lora restricted keeps B's rows and A's columns and the scaling") {
  Lora<cpu> lora(kOut, kIn, config(), RandomStream(1, 2));
  randomize_parameters(lora, 18);
  const std::vector<std::int32_t> rows{0, 4}, cols{1, 2, 8};
  const Lora<cpu> compact = lora.restricted(rows, cols);
  CHECK(compact.out_features() == 2);
  CHECK(compact.in_features() == 3);
  CHECK(compact.scaling() == lora.scaling());
  CHECK(compact.trainable_count() == 3 * (2 + 3));
  for (Index k = 0; k < 3; ++k) {
    for (Index j = 0; j < 3; ++j) CHECK(compact.lora_A()(k, j) == lora.lora_A()(k, cols[std::size_t(j)]));
    for (Index i = 0; i < 2; ++i) CHECK(compact.lora_B()(i, k) == lora.lora_B()(rows[std::size_t(i)], k));
  }
}

TEST_CASE("Lora Saved buffers are reused when shapes repeat or shrink") {
  Lora<cpu> lora(kOut, kIn, config(), RandomStream(1, 2));
  Lora<cpu>::Saved saved;
  const auto run = [&](Index tokens) {
    HostMatrix x = random_matrix(tokens, kIn, 19), y(tokens, kOut);
    lora.forward(y.view(), x.view(), saved);
    return saved.down.rows(tokens).data;
  };
  const float* first = run(kTokens);
  CHECK(run(kTokens) == first);
  CHECK(run(kTokens - 2) == first);
  CHECK(run(kTokens) == first);
}

TEST_CASE("Lora rejects bad configs and shapes with messages naming them") {
  const RandomStream init(1, 2);
  CHECK_THROWS_WITH_AS(Lora<cpu>(kOut, kIn, config(0), init),
                       doctest::Contains("rank = 0 is outside [1, min(out, in)] = [1, 6]"), ValueError);
  CHECK_THROWS_WITH_AS(Lora<cpu>(kOut, kIn, config(7), init), doctest::Contains("rank = 7 is outside"), ValueError);
  CHECK_THROWS_WITH_AS(Lora<cpu>(kOut, kIn, config(3, 0.0f), init), doctest::Contains("alpha = 0"), ValueError);
  CHECK_THROWS_WITH_AS(Lora<cpu>(kOut, kIn, config(3, 6.0f, 1.0f), init),
                       doctest::Contains("dropout = 1 is outside [0, 1)"), ValueError);
  CHECK_THROWS_WITH_AS(Lora<cpu>(kOut, kIn, config(3, 6.0f, -0.1f), init), doctest::Contains("dropout = -0.1"),
                       ValueError);
  CHECK_THROWS_WITH_AS(Lora<cpu>(0, kIn, config(), init), doctest::Contains("at least 1 x 1"), ShapeError);

  Lora<cpu> lora(kOut, kIn, config(), init);
  Lora<cpu>::Saved saved;
  HostMatrix x(kTokens, kIn), y(kTokens, kOut), wrong_x(kTokens, kIn + 1), wrong_y(kTokens + 1, kOut);
  CHECK_THROWS_WITH_AS(lora.forward(y.view(), wrong_x.view(), saved),
                       doctest::Contains("x has 10 columns, expected in_features = 9"), ShapeError);
  CHECK_THROWS_WITH_AS(lora.forward(wrong_y.view(), x.view(), saved), doctest::Contains("y is 6 x 6, expected 5 x 6"),
                       ShapeError);
  lora.forward(y.view(), x.view(), saved);
  HostMatrix dx(kTokens, kIn), wrong_dy(kTokens, kOut + 1);
  CHECK_THROWS_WITH_AS(lora.backward(dx.view(), wrong_dy.view(), x.view(), saved),
                       doctest::Contains("dy is 5 x 7, expected 5 x 6"), ShapeError);
  HostMatrix x3(3, kIn), dy3(3, kOut), dx3(3, kIn);
  CHECK_THROWS_WITH_AS(lora.backward(dx3.view(), dy3.view(), x3.view(), saved),
                       doctest::Contains("saved state is from a forward over 5 tokens but x has 3 rows"), ShapeError);
  HostMatrix wrong_w(kOut, kIn - 1);
  CHECK_THROWS_WITH_AS(lora.merge_into(wrong_w.view()), doctest::Contains("merge_into weight: expected shape 6 x 9"),
                       ShapeError);
  CHECK_THROWS_WITH_AS((void)lora.restricted({2, 1}, {0}), doctest::Contains("rows must be sorted ascending"),
                       ValueError);
  CHECK_THROWS_WITH_AS((void)lora.restricted({0}, {9}), doctest::Contains("cols[0] = 9 is outside [0, 9)"), ShapeError);
}
