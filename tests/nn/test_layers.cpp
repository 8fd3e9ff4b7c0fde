// Each layer's forward against a naive double-precision loop and its backward
// against central finite differences (tests/support/numeric.hpp).
//
// Tolerances for finite differences: outputs are float, the loss is
// sum(weights ⊙ y) over O(10..100) O(1) terms, h = 1e-2. Truncation error is
// h^2/6 |f'''| ~ 2e-5 |f'''| and rounding eps_f |loss| / h ~ 6e-8 * 30 / 1e-2
// ~ 2e-4 absolute; gradients are O(1), so a relative error below 5e-3 leaves a
// margin of ~10 while a wrong term (a missing 1/sqrt(d), a transposed block)
// gives errors of order 1.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "plora/adapters/lora.hpp"
#include "plora/backend/cpu/cpu.hpp"
#include "plora/nn/attention.hpp"
#include "plora/nn/cross_entropy.hpp"
#include "plora/nn/dropout.hpp"
#include "plora/nn/layernorm.hpp"
#include "plora/nn/mlp.hpp"
#include "plora/nn/patch_embedding.hpp"
#include "plora/nn/trainable_linear.hpp"
#include "plora/nn/vit_embeddings.hpp"
#include "support/numeric.hpp"

using namespace plora;
using plora::test::finite_difference;
using plora::test::max_abs_diff;
using plora::test::random_matrix;
using plora::test::relative_error;
using plora::test::weighted_sum;

namespace {
using Site = LinearSite<cpu, Lora<cpu>>;
using Attention = SelfAttention<cpu, Lora<cpu>>;
using LoraMlp = Mlp<cpu, Lora<cpu>>;
constexpr double kFdTolerance = 5e-3;

Site random_site(const std::string& name, Index out, Index in, std::uint64_t seed, bool bias = true) {
  return Site(name, random_matrix(out, in, seed, -0.6f, 0.6f), bias ? random_matrix(1, out, seed + 1) : HostMatrix());
}

/// A LoRA with non-zero B, so both factors get gradients.
Lora<cpu> random_lora(Index out, Index in, std::uint64_t seed) {
  Lora<cpu> lora(out, in, LoraConfig{.rank = 2, .alpha = 4.0f}, RandomStream(seed, 0));
  const HostMatrix b = random_matrix(out, 2, seed + 7);
  cpu::copy(lora.lora_B(), b.view());
  return lora;
}

/// Checks dx (unless empty) and every adapter parameter gradient of `sites`
/// against finite differences of loss(), which reruns the forward pass.
void check_gradients(HostView x, const HostMatrix& dx, const std::function<double()>& loss,
                     const std::vector<Site*>& sites) {
  if (!dx.view().empty()) {
    const HostMatrix fd = finite_difference(x, loss);
    CHECK(relative_error(dx.view(), fd.view()) < kFdTolerance);
  }
  for (Site* s : sites) {
    for (auto& p : s->adapter().parameters()) {
      const HostMatrix analytic(p.grad);
      const HostMatrix fd = finite_difference(p.value, loss);
      INFO(s->name(), ".", p.name);
      CHECK(relative_error(analytic.view(), fd.view()) < kFdTolerance);
    }
  }
}

/// softmax(Q K^T / sqrt(d) + mask) V per image and head, all in double, from
/// site weights (no adapters): the independent attention reference.
HostMatrix naive_attention(const HostMatrix& x, Index tokens, Index heads, const HostMatrix& wq, const HostMatrix& bq,
                           const HostMatrix& wk, const HostMatrix& bk, const HostMatrix& wv, const HostMatrix& bv,
                           const HostMatrix& wo, const HostMatrix& bo, const HostMatrix* mask) {
  const Index rows = x.rows(), hidden = wq.rows(), d = hidden / heads, batch = rows / tokens;
  const auto project = [&](const HostMatrix& w, const HostMatrix& b) {
    std::vector<double> y(static_cast<std::size_t>(rows * w.rows()));
    for (Index r = 0; r < rows; ++r)
      for (Index o = 0; o < w.rows(); ++o) {
        double acc = b.size() ? b(0, o) : 0.0;
        for (Index i = 0; i < w.cols(); ++i) acc += double(x(r, i)) * w(o, i);
        y[static_cast<std::size_t>(r * w.rows() + o)] = acc;
      }
    return y;
  };
  const auto q = project(wq, bq), k = project(wk, bk), v = project(wv, bv);
  std::vector<double> context(static_cast<std::size_t>(rows * hidden));
  for (Index n = 0; n < batch; ++n)
    for (Index h = 0; h < heads; ++h)
      for (Index i = 0; i < tokens; ++i) {
        std::vector<double> s(static_cast<std::size_t>(tokens));
        double top = -1e300;
        for (Index j = 0; j < tokens; ++j) {
          double dot = 0.0;
          for (Index c = 0; c < d; ++c)
            dot += q[static_cast<std::size_t>((n * tokens + i) * hidden + h * d + c)] *
                   k[static_cast<std::size_t>((n * tokens + j) * hidden + h * d + c)];
          s[static_cast<std::size_t>(j)] = dot / std::sqrt(double(d)) + (mask ? (*mask)(n, j) : 0.0);
          top = std::max(top, s[static_cast<std::size_t>(j)]);
        }
        double total = 0.0;
        for (auto& e : s) total += (e = std::exp(e - top));
        for (Index c = 0; c < d; ++c) {
          double acc = 0.0;
          for (Index j = 0; j < tokens; ++j)
            acc += s[static_cast<std::size_t>(j)] / total *
                   v[static_cast<std::size_t>((n * tokens + j) * hidden + h * d + c)];
          context[static_cast<std::size_t>((n * tokens + i) * hidden + h * d + c)] = acc;
        }
      }
  HostMatrix out(rows, wo.rows());
  for (Index r = 0; r < rows; ++r)
    for (Index o = 0; o < wo.rows(); ++o) {
      double acc = bo(0, o);
      for (Index c = 0; c < hidden; ++c) acc += context[static_cast<std::size_t>(r * hidden + c)] * wo(o, c);
      out(r, o) = float(acc);
    }
  return out;
}

struct AttentionCase {
  Index batch, tokens, heads;
};
}  // namespace

TEST_CASE("a linear site adds its bias inside its GEMM; InputGrad::add accumulates dx") {
  // y = x W^T + b + LoRA against a zeroing GEMM, then the bias, then the LoRA
  // branch on its own; dx += dy W (+ LoRA's) against the assigned dx plus an
  // axpy. The same float terms summed in another order: a few ulps of the
  // O(1..10) results.
  const Index tokens = 7, out = 5, in = 6;
  const HostMatrix x = random_matrix(tokens, in, 601), dy = random_matrix(tokens, out, 602);
  const HostMatrix dx_before = random_matrix(tokens, in, 604);
  for (const bool bias : {true, false}) {
    INFO("bias ", bias);
    Site site = random_site("site", out, in, 605, bias);
    site.attach(random_lora(out, in, 606));
    Lora<cpu> branch = site.adapter();
    Lora<cpu>::Saved branch_saved;
    Site::Saved saved;
    HostMatrix expected(tokens, out), y(tokens, out);
    cpu::fill(expected.view(), 123.0f);  // stale values the zeroing GEMM must not keep
    cpu::gemm(expected.view(), x.view(), Op::N, site.weight(), Op::T, 1.0f, 0.0f);
    if (bias) cpu::add_row_vector(expected.view(), site.bias());
    branch.forward(expected.view(), x.view(), branch_saved);
    cpu::fill(y.view(), 123.0f);
    site.forward(y.view(), x.view(), saved);
    CHECK(relative_error(y.view(), expected.view()) < 1e-6);

    HostMatrix dx_expected(tokens, in), dx = dx_before;
    site.backward(dx_expected.view(), dy.view(), x.view(), saved);
    cpu::axpy(dx_expected.view(), 1.0f, dx_before.view());
    site.backward(dx.view(), dy.view(), x.view(), saved, Site::InputGrad::add);
    CHECK(relative_error(dx.view(), dx_expected.view()) < 1e-6);
  }
}

TEST_CASE("dropout drops a fraction p, scales the rest by 1 / (1 - p), masks its backward, and is off without a stream") {
  const float p = 0.1f;
  Dropout<cpu> dropout(p);
  RandomStream stream(5, 6);
  HostMatrix x(200, 200);
  cpu::fill(x.view(), 1.0f);
  dropout.forward(x.view(), &stream);
  CHECK(dropout.applied());
  CHECK(stream.offset() == 200u * 200u);
  Index dropped = 0;
  for (const float v : x.values()) {
    dropped += v == 0.0f ? 1 : 0;
    if (v != 0.0f) CHECK(v == 1.0f / (1.0f - p));
  }
  // 40000 Bernoulli(0.1) draws: standard deviation of the fraction 0.0015; 5 sigma.
  CHECK(std::abs(double(dropped) / 40000.0 - p) < 0.0075);
  HostMatrix dy(200, 200), dx(200, 200);
  cpu::fill(dy.view(), 1.0f);
  (void)dropout.backward(dx.view(), dy.view());
  CHECK(max_abs_diff(dx.view(), x.view()) == 0.0);  // the same mask

  HostMatrix untouched = dy;
  dropout.forward(untouched.view(), nullptr);  // evaluation
  CHECK_FALSE(dropout.applied());
  CHECK(max_abs_diff(untouched.view(), dy.view()) == 0.0);
  CHECK(dropout.backward(dx.view(), dy.view()).data == dy.view().data);
  CHECK(stream.offset() == 200u * 200u);
  CHECK_THROWS_AS(Dropout<cpu>(1.0f), ValueError);
}

TEST_CASE("LayerNorm backward matches finite differences, frozen and trainable") {
  const Index rows = 3, n = 7;
  HostMatrix x = random_matrix(rows, n, 11, -2.0f, 2.0f);
  const HostMatrix weights = random_matrix(rows, n, 12);
  for (const bool trainable : {false, true}) {
    LayerNorm<cpu> ln("ln", random_matrix(1, n, 13, 0.5f, 1.5f), random_matrix(1, n, 14), 1e-5f, trainable);
    HostMatrix y(rows, n), dx(rows, n);
    const auto loss = [&] {
      ln.forward(y.view(), x.view());
      return weighted_sum(y.view(), weights.view());
    };
    loss();
    ln.zero_grad();
    ln.backward(dx.view(), weights.view(), x.view());
    CHECK(relative_error(dx.view(), finite_difference(x.view(), loss).view()) < kFdTolerance);
    CHECK(ln.parameters().size() == (trainable ? 2u : 0u));
    CHECK(ln.trainable_count() == (trainable ? 2 * n : 0));
    for (auto& p : ln.parameters()) {
      INFO(p.name);
      CHECK(relative_error(HostMatrix(p.grad).view(), finite_difference(p.value, loss).view()) < kFdTolerance);
    }
  }
}

TEST_CASE("LayerNorm rejects parameters of different lengths and eps <= 0") {
  CHECK_THROWS_WITH_AS(LayerNorm<cpu>("vit.layernorm", HostMatrix(1, 4), HostMatrix(1, 5), 1e-6f),
                       doctest::Contains("vit.layernorm.bias"), ShapeError);
  CHECK_THROWS_AS(LayerNorm<cpu>("ln", HostMatrix(1, 4), HostMatrix(1, 4), 0.0f), ValueError);
}

TEST_CASE("self-attention forward equals a naive double-precision reference") {
  // batch >= heads batches over images, batch < heads over heads; heads = 1
  // makes the score and activation row counts equal.
  for (const AttentionCase c : {AttentionCase{3, 4, 2}, AttentionCase{1, 5, 3}, AttentionCase{2, 3, 1}}) {
    const Index hidden = 6, in = 5, out = 4, rows = c.batch * c.tokens;
    const HostMatrix x = random_matrix(rows, in, 21);
    const HostMatrix wq = random_matrix(hidden, in, 22, -0.6f, 0.6f), bq = random_matrix(1, hidden, 23);
    const HostMatrix wk = random_matrix(hidden, in, 24, -0.6f, 0.6f), bk = random_matrix(1, hidden, 25);
    const HostMatrix wv = random_matrix(hidden, in, 26, -0.6f, 0.6f);
    const HostMatrix wo = random_matrix(out, hidden, 27, -0.6f, 0.6f), bo = random_matrix(1, out, 28);
    Attention attention(Site("q", wq, bq), Site("k", wk, bk), Site("v", wv, HostMatrix()),
                                            Site("o", wo, bo), c.heads);
    HostMatrix y(rows, out);
    attention.forward(y.view(), x.view(), c.tokens);
    const HostMatrix expected =
        naive_attention(x, c.tokens, c.heads, wq, bq, wk, bk, wv, HostMatrix(), wo, bo, nullptr);
    INFO("batch ", c.batch, " tokens ", c.tokens, " heads ", c.heads);
    // Sums of <= 6 O(1) float products and a float softmax: a few ulps of O(1).
    CHECK(max_abs_diff(y.view(), expected.view()) < 1e-5);
  }
}

TEST_CASE("self-attention backward matches finite differences (input, LoRA on all four sites)") {
  for (const AttentionCase c : {AttentionCase{2, 3, 2}, AttentionCase{1, 3, 3}}) {
    const Index hidden = 6, in = 5, out = 4, rows = c.batch * c.tokens;
    HostMatrix x = random_matrix(rows, in, 31);
    Attention attention(random_site("q", hidden, in, 32), random_site("k", hidden, in, 34),
                                            random_site("v", hidden, in, 36), random_site("o", out, hidden, 38),
                                            c.heads);
    std::vector<Site*> sites = {&attention.query(), &attention.key(), &attention.value(), &attention.output()};
    std::uint64_t seed = 40;
    for (Site* s : sites) s->attach(random_lora(s->out_features(), s->in_features(), seed += 3));
    const HostMatrix weights = random_matrix(rows, out, 50);
    HostMatrix y(rows, out), dx(rows, in);
    BackwardScratch<cpu> scratch;
    const auto loss = [&] {
      attention.forward(y.view(), x.view(), c.tokens);
      return weighted_sum(y.view(), weights.view());
    };
    loss();
    for (Site* s : sites) s->adapter().zero_grad();
    attention.backward(dx.view(), weights.view(), x.view(), scratch);
    INFO("batch ", c.batch, " heads ", c.heads);
    check_gradients(x.view(), dx, loss, sites);
  }
}

TEST_CASE("self-attention on first tokens only: token 0's rows of the full forward; its backward by finite differences") {
  for (const AttentionCase c : {AttentionCase{3, 4, 2}, AttentionCase{1, 5, 3}}) {
    const Index hidden = 6, in = 5, out = 4, rows = c.batch * c.tokens;
    HostMatrix x = random_matrix(rows, in, 91);
    Attention attention(random_site("q", hidden, in, 92), random_site("k", hidden, in, 94),
                        random_site("v", hidden, in, 96), random_site("o", out, hidden, 98), c.heads);
    std::vector<Site*> sites = {&attention.query(), &attention.key(), &attention.value(), &attention.output()};
    std::uint64_t seed = 100;
    for (Site* s : sites) s->attach(random_lora(s->out_features(), s->in_features(), seed += 3));
    HostMatrix mask(c.batch, c.tokens);
    mask(0, c.tokens - 1) = -1e9f;  // the mask's rows must follow the shorter score blocks
    HostMatrix every(rows, out), first(c.batch, out);
    attention.forward(every.view(), x.view(), c.tokens, mask.view());
    attention.forward(first.view(), x.view(), c.tokens, mask.view(), nullptr, Queries::first_token);
    CHECK(attention.probabilities().rows == c.batch * c.heads);
    INFO("batch ", c.batch, " tokens ", c.tokens, " heads ", c.heads);
    // The same float sums, possibly blocked differently in GEMMs of other
    // shapes: a few ulps of these O(1) outputs.
    CHECK(max_abs_diff(first.view(), every.view().every_nth_row(c.tokens)) < 1e-6);

    const HostMatrix weights = random_matrix(c.batch, out, 110);
    BackwardScratch<cpu> scratch;
    const auto loss = [&] {
      attention.forward(first.view(), x.view(), c.tokens, mask.view(), nullptr, Queries::first_token);
      return weighted_sum(first.view(), weights.view());
    };
    loss();
    for (Site* s : sites) s->adapter().zero_grad();
    HostMatrix dx(rows, in);
    attention.backward(dx.view(), weights.view(), x.view(), scratch);
    check_gradients(x.view(), dx, loss, sites);
  }
}

TEST_CASE("self-attention with an empty dx still fills site gradients, and dW for SNIP") {
  const Index tokens = 3, hidden = 4, rows = 2 * tokens;
  HostMatrix x = random_matrix(rows, hidden, 61);
  Attention attention(random_site("q", hidden, hidden, 62), random_site("k", hidden, hidden, 64),
                                          random_site("v", hidden, hidden, 66), random_site("o", hidden, hidden, 68),
                                          2);
  attention.key().enable_weight_grad(true);
  const HostMatrix weights = random_matrix(rows, hidden, 70);
  HostMatrix y(rows, hidden);
  BackwardScratch<cpu> scratch;
  attention.forward(y.view(), x.view(), tokens);
  attention.backward(HostView{}, weights.view(), x.view(), scratch);
  const auto loss = [&] {
    attention.forward(y.view(), x.view(), tokens);
    return weighted_sum(y.view(), weights.view());
  };
  const HostMatrix dw = *attention.key().weight_grad();
  CHECK(relative_error(dw.view(), finite_difference(attention.key().mutable_weight(), loss).view()) < kFdTolerance);
}

TEST_CASE("a padding mask makes padded keys invisible") {
  // Image 1 has 2 real tokens of 4: its real rows must equal attention over
  // those 2 tokens alone, computed as an unpadded sequence.
  const Index tokens = 4, real = 2, hidden = 6, heads = 2;
  const HostMatrix x = random_matrix(2 * tokens, hidden, 81);
  const auto make = [&] {
    return Attention(random_site("q", hidden, hidden, 82), random_site("k", hidden, hidden, 84),
                                         random_site("v", hidden, hidden, 86), random_site("o", hidden, hidden, 88),
                                         heads);
  };
  auto attention = make();
  HostMatrix mask(2, tokens);
  for (Index j = real; j < tokens; ++j) mask(1, j) = -1e9f;
  HostMatrix y(2 * tokens, hidden);
  attention.forward(y.view(), x.view(), tokens, mask.view());

  auto alone = make();
  const HostMatrix x_short(x.view().row_block(tokens, real));
  HostMatrix y_short(real, hidden);
  alone.forward(y_short.view(), x_short.view(), real);
  CHECK(max_abs_diff(y.view().row_block(tokens, real), y_short.view()) < 1e-5);
  // Image 0 has no padding: identical to a forward without a mask.
  HostMatrix y_full(2 * tokens, hidden);
  auto plain = make();
  plain.forward(y_full.view(), x.view(), tokens);
  CHECK(max_abs_diff(y.view().row_block(0, tokens), y_full.view().row_block(0, tokens)) < 1e-6);
  // Masked probabilities are exactly zero (exp underflows).
  const ConstHostView p = attention.probabilities();
  for (Index r = 2 * tokens; r < 4 * tokens; ++r)  // image 1's rows: (image, head, token)
    for (Index j = real; j < tokens; ++j) CHECK(p(r, j) == 0.0f);

  SUBCASE("and backward with the mask matches finite differences") {
    HostMatrix xm = x;
    std::vector<Site*> sites = {&attention.query(), &attention.value()};
    attention.query().attach(random_lora(hidden, hidden, 90));
    attention.value().attach(random_lora(hidden, hidden, 93));
    const HostMatrix weights = random_matrix(2 * tokens, hidden, 95);
    HostMatrix dx(2 * tokens, hidden);
    BackwardScratch<cpu> scratch;
    const auto loss = [&] {
      attention.forward(y.view(), xm.view(), tokens, mask.view());
      return weighted_sum(y.view(), weights.view());
    };
    loss();
    for (Site* s : sites) s->adapter().zero_grad();
    attention.backward(dx.view(), weights.view(), xm.view(), scratch);
    check_gradients(xm.view(), dx, loss, sites);
  }
}

TEST_CASE("self-attention rejects heads that do not divide the width and bad masks") {
  CHECK_THROWS_AS(Attention(random_site("q", 6, 6, 1), random_site("k", 6, 6, 2),
                                                random_site("v", 6, 6, 3), random_site("o", 6, 6, 4), 4),
                  ValueError);
  CHECK_THROWS_WITH_AS(Attention(random_site("q", 6, 6, 1), random_site("key", 4, 6, 2),
                                                     random_site("v", 6, 6, 3), random_site("o", 6, 6, 4), 2),
                       doctest::Contains("key"), ShapeError);
  Attention attention(random_site("q", 6, 6, 1), random_site("k", 6, 6, 2),
                                          random_site("v", 6, 6, 3), random_site("o", 6, 6, 4), 2);
  HostMatrix x(6, 6), y(6, 6), mask(3, 3);
  CHECK_THROWS_AS(attention.forward(y.view(), x.view(), 4), ShapeError);  // 6 rows are not 4-token sequences
  CHECK_THROWS_AS(attention.forward(y.view(), x.view(), 3, mask.view()), ShapeError);  // 2 images, 3 mask rows
}

TEST_CASE("MLP backward matches finite differences (input and LoRA on both sites)") {
  const Index rows = 4, in = 5, inner = 7, out = 3;
  HostMatrix x = random_matrix(rows, in, 101, -2.0f, 2.0f);
  LoraMlp mlp(random_site("fc1", inner, in, 102), random_site("fc2", out, inner, 104));
  mlp.intermediate().attach(random_lora(inner, in, 106));
  mlp.output().attach(random_lora(out, inner, 109));
  const HostMatrix weights = random_matrix(rows, out, 112);
  HostMatrix y(rows, out), dx(rows, in);
  BackwardScratch<cpu> scratch;
  const auto loss = [&] {
    mlp.forward(y.view(), x.view());
    return weighted_sum(y.view(), weights.view());
  };
  loss();
  mlp.intermediate().adapter().zero_grad();
  mlp.output().adapter().zero_grad();
  mlp.backward(dx.view(), weights.view(), x.view(), scratch);
  check_gradients(x.view(), dx, loss, {&mlp.intermediate(), &mlp.output()});

  // Inference (Keep::nothing) runs the GELU in place: the same output bit for
  // bit (the same sums), and no backward may follow it. Without the adapters
  // the fused linear_gelu runs; with them, the separate GELU.
  for (const bool adapters : {true, false}) {
    CAPTURE(adapters);
    if (!adapters) {
      mlp.intermediate().detach();
      mlp.output().detach();
    }
    HostMatrix kept(rows, out), inferred(rows, out);
    mlp.forward(kept.view(), x.view());
    mlp.forward(inferred.view(), x.view(), {}, Keep::nothing);
    CHECK(inferred.values() == kept.values());
    CHECK_THROWS_WITH_AS(mlp.backward(dx.view(), weights.view(), x.view(), scratch), doctest::Contains("fc1"),
                         ValueError);
  }

  // The activation is the exact erf GELU: one hidden unit through identity-like weights.
  LoraMlp probe(Site("fc1", HostMatrix(1, 1, {1.0f}), HostMatrix()),
                            Site("fc2", HostMatrix(1, 1, {1.0f}), HostMatrix()));
  HostMatrix in1(1, 1, {-0.75f}), out1(1, 1);
  probe.forward(out1.view(), in1.view());
  CHECK(out1(0, 0) == doctest::Approx(0.5 * -0.75 * (1.0 + std::erf(-0.75 / std::sqrt(2.0)))).epsilon(1e-6));
}

TEST_CASE("patch embedding equals a naive strided convolution") {
  const Index channels = 2, size = 6, patch = 3, hidden = 5, batch = 2, grid = size / patch;
  const HostMatrix weight = random_matrix(hidden, channels * patch * patch, 121);  // [hidden, C, P, P]
  const HostMatrix bias = random_matrix(1, hidden, 122);
  const HostMatrix pixels = random_matrix(batch, channels * size * size, 123);  // [N, C, S, S]
  PatchEmbedding<cpu> embed(weight, bias, channels, size, patch);
  CHECK(embed.patches() == grid * grid);
  HostMatrix out(batch * grid * grid, hidden);
  embed.forward(out.view(), pixels.view());
  HostMatrix expected(batch * grid * grid, hidden);
  for (Index n = 0; n < batch; ++n)
    for (Index py = 0; py < grid; ++py)
      for (Index px = 0; px < grid; ++px)
        for (Index o = 0; o < hidden; ++o) {
          double acc = bias(0, o);
          for (Index c = 0; c < channels; ++c)
            for (Index ky = 0; ky < patch; ++ky)
              for (Index kx = 0; kx < patch; ++kx)
                acc += double(weight(o, (c * patch + ky) * patch + kx)) *
                       pixels(n, (c * size + py * patch + ky) * size + px * patch + kx);
          expected(n * grid * grid + py * grid + px, o) = float(acc);
        }
  // 18-term float dot products of O(1) values.
  CHECK(max_abs_diff(out.view(), expected.view()) < 1e-5);

  HostMatrix wrong(batch, channels * size * size - 1);
  CHECK_THROWS_AS(embed.forward(out.view(), wrong.view()), ShapeError);
  CHECK_THROWS_AS(PatchEmbedding<cpu>(weight, bias, channels, 7, patch), ValueError);

  // Sizes whose products wrap in 64 bits: (2^32 - 2)^2 wraps to a negative pixel count, 2^62 channels x 2 x 2
  // patch features to 0. Both must be refused before anything is sized from them.
  const HostMatrix w4 = random_matrix(1, 4, 124), b1 = random_matrix(1, 1, 125);
  CHECK_THROWS_WITH_AS(PatchEmbedding<cpu>(w4, b1, 1, (Index{1} << 32) - 2, 2), doctest::Contains("int32"), ValueError);
  CHECK_THROWS_WITH_AS(PatchEmbedding<cpu>(w4, b1, Index{1} << 62, 2, 2), doctest::Contains("int32"), ValueError);
  CHECK_THROWS_AS(PatchEmbedding<cpu>(w4, b1, 1, 9223372036854775800, 2), ValueError);
  // 3 x 26756^2 = 2147650608 values per image exceed INT32_MAX (26754, the next even size down, would fit).
  CHECK_THROWS_AS(PatchEmbedding<cpu>(random_matrix(1, 12, 126), b1, 3, 26756, 2), ValueError);
}

TEST_CASE("ViT embeddings prepend cls and add position embeddings") {
  const Index channels = 1, size = 4, patch = 2, hidden = 3, batch = 2, tokens = 5;
  const HostMatrix weight = random_matrix(hidden, channels * patch * patch, 131), bias = random_matrix(1, hidden, 132);
  const HostMatrix cls = random_matrix(1, hidden, 133), pos = random_matrix(tokens, hidden, 134);
  const HostMatrix pixels = random_matrix(batch, channels * size * size, 135);
  PatchEmbedding<cpu> patches(weight, bias, channels, size, patch);
  HostMatrix patch_out(batch * 4, hidden);
  patches.forward(patch_out.view(), pixels.view());
  VitEmbeddings<cpu> embeddings(patches, cls, pos);
  HostMatrix out(batch * tokens, hidden);
  embeddings.forward(out.view(), pixels.view());
  for (Index n = 0; n < batch; ++n)
    for (Index c = 0; c < hidden; ++c) {
      CHECK(out(n * tokens, c) == cls(0, c) + pos(0, c));
      for (Index p = 0; p < 4; ++p) CHECK(out(n * tokens + 1 + p, c) == patch_out(n * 4 + p, c) + pos(1 + p, c));
    }
  CHECK_THROWS_WITH_AS(VitEmbeddings<cpu>(patches, cls, random_matrix(tokens + 1, hidden, 1)),
                       doctest::Contains("position_embeddings"), ShapeError);
}

TEST_CASE("trainable linear head with cross-entropy: gradients match finite differences") {
  const Index rows = 3, in = 4, classes = 5;
  HostMatrix x = random_matrix(rows, in, 141);
  TrainableLinear<cpu> head("classifier", random_matrix(classes, in, 142), random_matrix(1, classes, 143));
  CrossEntropy<cpu> ce;
  const std::vector<std::int32_t> labels = {4, 0, 2};
  HostMatrix logits(rows, classes), dlogits(rows, classes), dx(rows, in);
  const auto loss = [&] {
    head.forward(logits.view(), x.view());
    return double(ce.forward_backward(dlogits.view(), logits.view(), labels));
  };
  loss();
  head.zero_grad();
  head.backward(dx.view(), dlogits.view(), x.view());
  CHECK(head.trainable_count() == classes * (in + 1));
  // The loss is O(1) and a mean over 3 rows: the same error budget as above.
  CHECK(relative_error(dx.view(), finite_difference(x.view(), loss).view()) < kFdTolerance);
  for (auto& p : head.parameters()) {
    INFO(p.name);
    CHECK(relative_error(HostMatrix(p.grad).view(), finite_difference(p.value, loss).view()) < kFdTolerance);
  }
  CHECK_THROWS_WITH_AS(TrainableLinear<cpu>("classifier", HostMatrix(5, 4), HostMatrix(1, 4)),
                       doctest::Contains("classifier.bias"), ShapeError);
  // A diverged model's logits: the loss would be NaN (or, at -inf on the label,
  // finite through the log clamp), so the loss refuses them; and an empty batch.
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    logits(1, 0) = bad;
    CHECK_THROWS_WITH_AS(ce.forward_backward(dlogits.view(), logits.view(), labels),
                         doctest::Contains("the 3 x 5 logits hold NaN or Inf"), NumericError);
  }
  HostMatrix none(0, classes);
  CHECK_THROWS_AS(ce.forward_backward(none.view(), none.view(), {}), ShapeError);
}
