// Partial<Lora> and Partial<AdaLora>: the compact adapter behaves exactly like
// the dense one whose masked rows of B and columns of A are zero — outputs,
// input grads, parameter grads and several gradient-descent steps — plus
// finite differences, merging, counts and bad kept lists.
#include <doctest/doctest.h>

#include <algorithm>

#include "adapters/adapter_testing.hpp"

using namespace plora;
using namespace plora::test;

namespace {
constexpr Index kOut = 6, kIn = 9, kTokens = 5;
const std::vector<std::int32_t> kRows{1, 4, 5};
const std::vector<std::int32_t> kCols{0, 3, 7, 8};

bool contains(const std::vector<std::int32_t>& ids, Index i) {
  return std::find(ids.begin(), ids.end(), static_cast<std::int32_t>(i)) != ids.end();
}

/// The kept part of a dense parameter, by naive loops: lora_A keeps columns
/// C, lora_B keeps rows R, lora_E is whole.
HostMatrix restrict_param(const std::string& name, ConstHostView dense) {
  if (name == "lora_A") {
    HostMatrix out(dense.rows, static_cast<Index>(kCols.size()));
    for (Index k = 0; k < dense.rows; ++k)
      for (Index j = 0; j < out.cols(); ++j) out(k, j) = dense(k, kCols[std::size_t(j)]);
    return out;
  }
  if (name == "lora_B") {
    HostMatrix out(static_cast<Index>(kRows.size()), dense.cols);
    for (Index i = 0; i < out.rows(); ++i)
      for (Index k = 0; k < dense.cols; ++k) out(i, k) = dense(kRows[std::size_t(i)], k);
    return out;
  }
  return HostMatrix(dense);
}

/// Zeroes the masked columns of lora_A and rows of lora_B of a dense adapter.
void zero_masked(const std::string& name, HostView dense) {
  for (Index r = 0; r < dense.rows; ++r)
    for (Index c = 0; c < dense.cols; ++c)
      if ((name == "lora_A" && !contains(kCols, c)) || (name == "lora_B" && !contains(kRows, r))) dense(r, c) = 0.0f;
}

/// Runs the dense (masked) and the partial adapter side by side for three
/// plain gradient-descent steps and compares everything at every step.
template <class Dense>
void check_partial_equals_masked_dense(const typename Dense::Config& config) {
  const RandomStream init(42, 7);
  Dense dense(kOut, kIn, config, init);
  Partial<Dense> partial(kOut, kIn, {config, kRows, kCols}, init);
  auto dense_params = dense.parameters();
  auto partial_params = partial.parameters();
  REQUIRE(dense_params.size() == partial_params.size());
  // The same stream gives exactly the dense adapter's initial values.
  for (std::size_t i = 0; i < dense_params.size(); ++i) {
    INFO("parameter ", dense_params[i].name);
    CHECK(partial_params[i].name == dense_params[i].name);
    CHECK(max_abs_diff(partial_params[i].value, restrict_param(dense_params[i].name, dense_params[i].value).view()) ==
          0.0);
  }
  // Non-trivial values (B and E are zero at init), masked in the dense one.
  randomize_parameters(dense, 9);
  for (std::size_t i = 0; i < dense_params.size(); ++i) {
    zero_masked(dense_params[i].name, dense_params[i].value);
    cpu::copy(partial_params[i].value, restrict_param(dense_params[i].name, dense_params[i].value).view());
  }
  const HostMatrix first_values(partial_params[0].value);

  const HostMatrix x = random_matrix(kTokens, kIn, 10), dy = random_matrix(kTokens, kOut, 11);
  const HostMatrix y0 = random_matrix(kTokens, kOut, 12), dx0 = random_matrix(kTokens, kIn, 13);
  // Both sum the same non-zero terms (masked ones are exact zeros), so they
  // agree to a few float ulps; 1e-5 relative leaves room over three steps.
  constexpr double tolerance = 1e-5;
  for (int step = 0; step < 3; ++step) {
    CAPTURE(step);
    HostMatrix y_dense = y0, y_partial = y0, dx_dense = dx0, dx_partial = dx0;
    typename Dense::Saved dense_saved;
    typename Partial<Dense>::Saved partial_saved;
    dense.forward(y_dense.view(), x.view(), dense_saved);
    partial.forward(y_partial.view(), x.view(), partial_saved);
    CHECK(relative_error(y_partial.view(), y_dense.view()) < tolerance);
    dense.zero_grad();
    partial.zero_grad();
    dense.backward(dx_dense.view(), dy.view(), x.view(), dense_saved);
    partial.backward(dx_partial.view(), dy.view(), x.view(), partial_saved);
    CHECK(relative_error(dx_partial.view(), dx_dense.view()) < tolerance);
    for (std::size_t i = 0; i < dense_params.size(); ++i) {
      INFO("parameter ", dense_params[i].name);
      const HostMatrix expected = restrict_param(dense_params[i].name, dense_params[i].grad);
      CHECK(max_abs(expected.view()) > 0.01);
      CHECK(relative_error(partial_params[i].grad, expected.view()) < tolerance);
      // Plain gradient descent; the dense adapter is projected back onto the mask.
      cpu::axpy(dense_params[i].value, -0.05f, dense_params[i].grad);
      zero_masked(dense_params[i].name, dense_params[i].value);
      cpu::axpy(partial_params[i].value, -0.05f, partial_params[i].grad);
    }
  }
  for (std::size_t i = 0; i < dense_params.size(); ++i) {
    INFO("parameter ", dense_params[i].name);
    CHECK(relative_error(partial_params[i].value, restrict_param(dense_params[i].name, dense_params[i].value).view()) <
          tolerance);
  }
  CHECK(max_abs_diff(partial_params[0].value, first_values.view()) > 1e-3);  // the steps moved the adapter
  // The zero-padded dense ΔW equals the masked dense adapter's ΔW.
  const HostMatrix padded = partial.delta();
  CHECK(relative_error(padded.view(), dense.delta().view()) < tolerance);
  for (Index r = 0; r < kOut; ++r)
    for (Index c = 0; c < kIn; ++c)
      if (!contains(kRows, r) || !contains(kCols, c)) CHECK(padded(r, c) == 0.0f);
}

LoraConfig lora_config(float dropout = 0.0f) {
  return {.rank = 3, .alpha = 6.0f, .use_rslora = false, .dropout = dropout};
}
AdaLoraConfig adalora_config() {
  AdaLoraConfig c;
  c.init_r = 3;
  return c;
}
}  // namespace

TEST_CASE("Partial<Lora> equals the dense LoRA with masked rows and columns zeroed") {
  check_partial_equals_masked_dense<Lora<cpu>>(lora_config());
}

TEST_CASE("Partial<AdaLora> equals the dense AdaLoRA with masked rows and columns zeroed") {
  check_partial_equals_masked_dense<AdaLora<cpu>>(adalora_config());
}

TEST_CASE("Partial adapters: finite-difference gradients, accumulation, merge") {
  const HostMatrix x = random_matrix(kTokens, kIn, 20);
  PartialLora<cpu> lora(kOut, kIn, {lora_config(), kRows, kCols}, RandomStream(1, 2));
  randomize_parameters(lora, 21);
  check_gradients(lora, x, 22);
  check_accumulation(lora, x, 23);
  check_merge(lora, x, 24);

  PartialAdaLora<cpu> ada(kOut, kIn, {adalora_config(), kRows, kCols}, RandomStream(1, 2));
  randomize_parameters(ada, 25);
  check_gradients(ada, x, 26);
  check_accumulation(ada, x, 27);
  check_merge(ada, x, 28);

  // Through the compact adapter's input dropout, rewound before every forward.
  PartialLora<cpu> dropped(kOut, kIn, {lora_config(0.3f), kRows, kCols}, RandomStream(1, 2));
  randomize_parameters(dropped, 29);
  const std::uint64_t start = dropped.inner().dropout_stream().offset();
  check_gradients(dropped, x, 30, [&] { dropped.inner().dropout_stream().set_offset(start); });
}

TEST_CASE("Partial counts only the kept factors and leaves other outputs untouched") {
  const std::vector<std::int32_t> rows{1, 4}, cols{0, 3, 8};
  PartialLora<cpu> lora(kOut, kIn, {{.rank = 2, .alpha = 4.0f}, rows, cols}, RandomStream(1, 2));
  CHECK(lora.trainable_count() == 2 * (2 + 3));  // r (|R| + |C|) = 10
  CHECK(lora.inner().out_features() == 2);
  CHECK(lora.inner().in_features() == 3);
  CHECK(lora.out_features() == kOut);
  CHECK(lora.in_features() == kIn);
  CHECK(lora.kept_rows() == rows);
  CHECK(lora.kept_cols() == cols);
  AdaLoraConfig ada_config;
  ada_config.init_r = 2;
  PartialAdaLora<cpu> ada(kOut, kIn, {ada_config, rows, cols}, RandomStream(1, 2));
  CHECK(ada.trainable_count() == 2 * (2 + 3 + 1));  // 12

  // Only y[:, R] changes, and only x[:, C] matters.
  randomize_parameters(lora, 31);
  HostMatrix x = random_matrix(kTokens, kIn, 32);
  const HostMatrix y = adapter_output(lora, x);
  for (Index t = 0; t < kTokens; ++t)
    for (Index o = 0; o < kOut; ++o)
      if (!contains(rows, o)) CHECK(y(t, o) == 0.0f);
  for (Index t = 0; t < kTokens; ++t) x(t, 5) += 10.0f;  // column 5 is not kept
  CHECK(max_abs_diff(adapter_output(lora, x).view(), y.view()) == 0.0);
}

TEST_CASE("Partial rejects bad kept lists and shapes with messages naming them") {
  const RandomStream init(1, 2);
  const auto make = [&](std::vector<std::int32_t> rows, std::vector<std::int32_t> cols) {
    return PartialLora<cpu>(kOut, kIn, {lora_config(), std::move(rows), std::move(cols)}, init);
  };
  CHECK_THROWS_WITH_AS(make({}, {0}), doctest::Contains("Partial: kept_rows is empty"), ValueError);
  CHECK_THROWS_WITH_AS(make({0}, {3, 1}),
                       doctest::Contains("kept_cols must be sorted ascending without duplicates, but kept_cols[0] = 3 "
                                         "is followed by 1"),
                       ValueError);
  CHECK_THROWS_WITH_AS(make({2, 2}, {0}), doctest::Contains("kept_rows must be sorted"), ValueError);
  CHECK_THROWS_WITH_AS(make({0}, {0, 9}), doctest::Contains("kept_cols[1] = 9 is outside [0, 9)"), ShapeError);
  CHECK_THROWS_WITH_AS(make({-1}, {0}), doctest::Contains("kept_rows[0] = -1 is outside [0, 6)"), ShapeError);
  CHECK_THROWS_WITH_AS(PartialLora<cpu>(kOut, kIn, {{.rank = 0}, {0}, {0}}, init), doctest::Contains("rank = 0"),
                       ValueError);

  PartialLora<cpu> lora = make({0, 2}, {1});
  PartialLora<cpu>::Saved saved;
  HostMatrix x(kTokens, kIn), y(kTokens, kOut), wrong_x(kTokens, 2);
  CHECK_THROWS_WITH_AS(lora.forward(y.view(), wrong_x.view(), saved),
                       doctest::Contains("Partial forward: x has 2 columns, expected in_features = 9"), ShapeError);
  HostMatrix wrong_w(2, 1);  // the compact shape is not the weight's shape
  CHECK_THROWS_WITH_AS(lora.merge_into(wrong_w.view()), doctest::Contains("expected shape 6 x 9"), ShapeError);
}
