// Partial<Lora> and Partial<AdaLora>: the compact adapter behaves exactly like
// the dense one whose masked rows of B and columns of A are zero — outputs,
// input grads, parameter grads and several gradient-descent steps — in one pass
// and in token tiles (a remainder tile, tiles of one token, one tile larger than
// the input); tiles equal one pass with input dropout too; plus finite
// differences, merging, counts and bad kept lists.
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

/// Tile sizes the tests run Partial with, and the tiles each makes of kTokens = 5:
/// one pass, one token per tile, 2 + 2 + 1 (a remainder), one tile larger than the input.
struct TileCase {
  Index tile_tokens;
  Index tiles;
};
constexpr TileCase kTileCases[] = {{0, 1}, {1, 5}, {2, 3}, {8, 1}};

/// Runs the dense (masked) and the partial adapter side by side for three
/// plain gradient-descent steps and compares everything at every step.
template <class Dense>
void check_partial_equals_masked_dense(const typename Dense::Config& config, TileCase tiling) {
  const RandomStream init(42, 7);
  Dense dense(kOut, kIn, config, init);
  Partial<Dense> partial(kOut, kIn, {config, kRows, kCols}, init);
  partial.set_tile_tokens(tiling.tile_tokens);
  REQUIRE(partial.tile_count(kTokens) == tiling.tiles);
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
  for (const TileCase tiling : kTileCases) {
    CAPTURE(tiling.tile_tokens);
    check_partial_equals_masked_dense<Lora<cpu>>(lora_config(), tiling);
  }
}

TEST_CASE("Partial<AdaLora> equals the dense AdaLoRA with masked rows and columns zeroed") {
  for (const TileCase tiling : kTileCases) {
    CAPTURE(tiling.tile_tokens);
    check_partial_equals_masked_dense<AdaLora<cpu>>(adalora_config(), tiling);
  }
}

namespace {
/// With input dropout the compact adapter draws its own (tokens x |C|) masks,
/// so the reference is the same Partial run in one pass: tiles must draw the
/// same masks and give the same outputs, input grads, parameter grads and
/// parameters over three gradient-descent steps.
template <class Dense>
void check_tiles_equal_one_pass(const typename Dense::Config& config) {
  Partial<Dense> one_pass(kOut, kIn, {config, kRows, kCols}, RandomStream(3, 4));
  randomize_parameters(one_pass, 40);
  one_pass.set_tile_tokens(0);
  for (const TileCase tiling : kTileCases) {
    CAPTURE(tiling.tile_tokens);
    Partial<Dense> reference = one_pass;
    Partial<Dense> tiled = one_pass;
    tiled.set_tile_tokens(tiling.tile_tokens);
    REQUIRE(tiled.tile_count(kTokens) == tiling.tiles);
    auto reference_params = reference.parameters();
    auto tiled_params = tiled.parameters();
    const HostMatrix x = random_matrix(kTokens, kIn, 41), dy = random_matrix(kTokens, kOut, 42);
    // The same sums grouped by tile: a few float ulps per step (see above).
    constexpr double tolerance = 1e-5;
    for (int step = 0; step < 3; ++step) {
      CAPTURE(step);
      HostMatrix y_reference(kTokens, kOut), y_tiled(kTokens, kOut), dx_reference(kTokens, kIn), dx_tiled(kTokens, kIn);
      typename Partial<Dense>::Saved reference_saved, tiled_saved;
      reference.forward(y_reference.view(), x.view(), reference_saved);
      tiled.forward(y_tiled.view(), x.view(), tiled_saved);
      CHECK(relative_error(y_tiled.view(), y_reference.view()) < tolerance);
      CHECK(tiled.inner().dropout_stream().offset() == reference.inner().dropout_stream().offset());
      reference.zero_grad();
      tiled.zero_grad();
      reference.backward(dx_reference.view(), dy.view(), x.view(), reference_saved);
      tiled.backward(dx_tiled.view(), dy.view(), x.view(), tiled_saved);
      CHECK(relative_error(dx_tiled.view(), dx_reference.view()) < tolerance);
      for (std::size_t i = 0; i < tiled_params.size(); ++i) {
        INFO("parameter ", tiled_params[i].name);
        CHECK(relative_error(tiled_params[i].grad, reference_params[i].grad) < tolerance);
        cpu::axpy(reference_params[i].value, -0.05f, reference_params[i].grad);
        cpu::axpy(tiled_params[i].value, -0.05f, tiled_params[i].grad);
      }
    }
    for (std::size_t i = 0; i < tiled_params.size(); ++i) {
      INFO("parameter ", tiled_params[i].name);
      CHECK(relative_error(tiled_params[i].value, reference_params[i].value) < tolerance);
    }
  }
  // Dropout is on: the same forward in eval mode gives a different output.
  Partial<Dense> eval = one_pass;
  eval.set_training(false);
  const HostMatrix x = random_matrix(kTokens, kIn, 43);
  CHECK(max_abs_diff(adapter_output(one_pass, x).view(), adapter_output(eval, x).view()) > 0.01);
}
}  // namespace

TEST_CASE("Partial in token tiles equals one pass with input dropout") {
  check_tiles_equal_one_pass<Lora<cpu>>(lora_config(0.3f));
  AdaLoraConfig ada = adalora_config();
  ada.dropout = 0.3f;
  check_tiles_equal_one_pass<AdaLora<cpu>>(ada);
}

TEST_CASE("Partial's backward walks the tiles of its forward") {
  // The default tile follows the thread count, which may change between a
  // forward and its backward; so may a tile set by hand. The backward must
  // use the forward's tiles: bit for bit the run that never changed.
  Partial<Lora<cpu>> steady(kOut, kIn, {lora_config(0.0f), kRows, kCols}, RandomStream(5, 6));
  randomize_parameters(steady, 50);
  steady.set_tile_tokens(2);
  Partial<Lora<cpu>> changed = steady;
  const HostMatrix x = random_matrix(kTokens, kIn, 51), dy = random_matrix(kTokens, kOut, 52);
  HostMatrix y_steady(kTokens, kOut), y_changed(kTokens, kOut), dx_steady(kTokens, kIn), dx_changed(kTokens, kIn);
  Partial<Lora<cpu>>::Saved steady_saved, changed_saved;
  steady.forward(y_steady.view(), x.view(), steady_saved);
  changed.forward(y_changed.view(), x.view(), changed_saved);
  changed.set_tile_tokens(0);  // one tile of 5 from here on, against the forward's 2 + 2 + 1
  steady.zero_grad();
  changed.zero_grad();
  steady.backward(dx_steady.view(), dy.view(), x.view(), steady_saved);
  changed.backward(dx_changed.view(), dy.view(), x.view(), changed_saved);
  CHECK(max_abs_diff(dx_changed.view(), dx_steady.view()) == 0.0);
  auto steady_params = steady.parameters();
  auto changed_params = changed.parameters();
  for (std::size_t i = 0; i < steady_params.size(); ++i) {
    INFO("parameter ", steady_params[i].name);
    CHECK(max_abs_diff(changed_params[i].grad, steady_params[i].grad) == 0.0);
  }
}

TEST_CASE("Partial reuses one Saved over applications of different lengths") {
  // DeBERTa applies one adapter to content and to relative positions; a Saved
  // that grew for a longer input and is reused for a shorter one (and back)
  // must give what a fresh Saved gives.
  PartialLora<cpu> adapter(kOut, kIn, {lora_config(), kRows, kCols}, RandomStream(5, 6));
  randomize_parameters(adapter, 50);
  adapter.set_tile_tokens(2);
  PartialLora<cpu>::Saved reused;
  for (const Index tokens : {Index{3}, Index{7}, Index{2}, Index{5}}) {
    CAPTURE(tokens);
    const HostMatrix x = random_matrix(tokens, kIn, 51 + std::uint64_t(tokens));
    const HostMatrix dy = random_matrix(tokens, kOut, 61 + std::uint64_t(tokens));
    HostMatrix y_fresh(tokens, kOut), y_reused(tokens, kOut), dx_fresh(tokens, kIn), dx_reused(tokens, kIn);
    PartialLora<cpu>::Saved fresh;
    adapter.forward(y_fresh.view(), x.view(), fresh);
    adapter.zero_grad();
    adapter.backward(dx_fresh.view(), dy.view(), x.view(), fresh);
    const HostMatrix grad_fresh(adapter.parameters()[0].grad);
    adapter.forward(y_reused.view(), x.view(), reused);
    adapter.zero_grad();
    adapter.backward(dx_reused.view(), dy.view(), x.view(), reused);
    // The same operations on the same values: bit-identical.
    CHECK(max_abs(y_fresh.view()) > 0.1);
    CHECK(max_abs_diff(y_reused.view(), y_fresh.view()) == 0.0);
    CHECK(max_abs_diff(dx_reused.view(), dx_fresh.view()) == 0.0);
    CHECK(max_abs_diff(adapter.parameters()[0].grad, grad_fresh.view()) == 0.0);
  }
}

TEST_CASE("Partial adapters: finite-difference gradients, accumulation, merge") {
  // In tiles of 2 tokens (2 + 2 + 1), so tiled backward is checked against the loss itself.
  const HostMatrix x = random_matrix(kTokens, kIn, 20);
  PartialLora<cpu> lora(kOut, kIn, {lora_config(), kRows, kCols}, RandomStream(1, 2));
  lora.set_tile_tokens(2);
  randomize_parameters(lora, 21);
  check_gradients(lora, x, 22);
  check_accumulation(lora, x, 23);
  check_strided_operands(lora, x, 23);
  check_merge(lora, x, 24);

  PartialAdaLora<cpu> ada(kOut, kIn, {adalora_config(), kRows, kCols}, RandomStream(1, 2));
  ada.set_tile_tokens(2);
  randomize_parameters(ada, 25);
  check_gradients(ada, x, 26);
  check_accumulation(ada, x, 27);
  check_strided_operands(ada, x, 27);
  check_merge(ada, x, 28);

  // Through the compact adapter's input dropout, rewound before every forward.
  PartialLora<cpu> dropped(kOut, kIn, {lora_config(0.3f), kRows, kCols}, RandomStream(1, 2));
  dropped.set_tile_tokens(2);
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
  // The host tiles by default, within the documented bounds per thread.
  const Index default_tile = lora.tile_tokens();
  CHECK(default_tile >= detail::kPartialMinTile * cpu::threads());
  CHECK(default_tile <= detail::kPartialMaxTile * cpu::threads());
  CHECK(default_tile % cpu::threads() == 0);
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

  lora.forward(y.view(), x.view(), saved);
  HostMatrix shorter_x(kTokens - 1, kIn), shorter_dy(kTokens - 1, kOut);
  CHECK_THROWS_WITH_AS(lora.backward(HostView{}, shorter_dy.view(), shorter_x.view(), saved),
                       doctest::Contains("Partial backward: the saved state is from a forward over 5 tokens but x "
                                         "has 4 rows"),
                       ShapeError);
  CHECK_THROWS_WITH_AS(lora.set_tile_tokens(-1), doctest::Contains("Partial: tile_tokens = -1 must be >= 0"),
                       ValueError);
}
