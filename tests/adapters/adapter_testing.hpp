#pragma once
// Checks every adapter test runs (CPU backend): finite-difference gradients of
// x and every parameter, accumulation of parameter grads, skipping an empty dx,
// and merge / unmerge against the unmerged forward.
#include <doctest/doctest.h>

#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "plora/adapters/adapters.hpp"
#include "plora/backend/cpu/cpu.hpp"
#include "support/numeric.hpp"

namespace plora::test {

/// Overwrites every parameter with U(-1, 1) draws (one stream per parameter),
/// so zero-initialised factors (LoRA's B, AdaLoRA's E) carry gradient.
template <class A>
void randomize_parameters(A& adapter, std::uint64_t seed) {
  std::uint64_t stream = 100;
  for (auto& p : adapter.parameters())
    cpu::copy(p.value, random_matrix(p.value.rows, p.value.cols, seed, -1.0f, 1.0f, stream++).view());
}

/// adapter(x) alone, y starting at zero.
template <class A>
HostMatrix adapter_output(A& adapter, const HostMatrix& x) {
  HostMatrix y(x.rows(), adapter.out_features());
  typename A::Saved saved;
  adapter.forward(y.view(), x.view(), saved);
  return y;
}

inline HostMatrix difference(const HostMatrix& a, const HostMatrix& b) {
  HostMatrix out = a;
  cpu::axpy(out.view(), -1.0f, b.view());
  return out;
}

/// Maps a finite-difference gradient to what the adapter's gradient should be
/// (identity, or e.g. RandomMasking's support mask).
using GradProjection = std::function<void(const std::string& name, HostMatrix& numeric)>;

/// backward vs central differences of L = Σ w ⊙ adapter(x), for x and every
/// parameter. `before_forward` runs before each forward (to rewind a dropout stream).
///
/// Every adapter output is linear in any single entry of x or of a parameter,
/// so central differences have no truncation error; the error is the float
/// rounding of L (~1e-7 · Σ|y| ≈ 3e-6 for these sizes) over 2h = 2e-2, about
/// 2e-4 against gradients of order 1 — hence the 2e-3 relative tolerance.
template <class A>
void check_gradients(A& adapter, HostMatrix x, std::uint64_t seed, const std::function<void()>& before_forward = {},
                     const GradProjection& project = {}) {
  constexpr double tolerance = 2e-3;
  const HostMatrix weights = random_matrix(x.rows(), adapter.out_features(), seed + 1);
  const auto loss = [&] {
    if (before_forward) before_forward();
    return weighted_sum(adapter_output(adapter, x).view(), weights.view());
  };
  if (before_forward) before_forward();
  typename A::Saved saved;
  HostMatrix y(x.rows(), adapter.out_features());
  adapter.forward(y.view(), x.view(), saved);
  adapter.zero_grad();
  const HostMatrix dx_before = random_matrix(x.rows(), x.cols(), seed + 2);
  HostMatrix dx = dx_before;
  adapter.backward(dx.view(), weights.view(), x.view(), saved);
  const HostMatrix analytic_dx = difference(dx, dx_before);  // backward adds into dx
  std::vector<HostMatrix> analytic;
  for (const auto& p : adapter.parameters()) analytic.emplace_back(p.grad);

  CHECK(relative_error(analytic_dx.view(), finite_difference(x.view(), loss).view()) < tolerance);
  std::size_t i = 0;
  for (const auto& p : adapter.parameters()) {
    HostMatrix numeric = finite_difference(p.value, loss);
    if (project) project(p.name, numeric);
    INFO("parameter ", p.name);
    CHECK(max_abs(numeric.view()) > 0.1);  // the check is not vacuous
    CHECK(relative_error(analytic[i].view(), numeric.view()) < tolerance);
    ++i;
  }
}

/// A second backward adds the same grads again; an empty dx is skipped and
/// leaves the parameter grads unchanged.
template <class A>
void check_accumulation(A& adapter, const HostMatrix& x, std::uint64_t seed) {
  const HostMatrix dy = random_matrix(x.rows(), adapter.out_features(), seed);
  typename A::Saved saved;
  HostMatrix y(x.rows(), adapter.out_features());
  adapter.forward(y.view(), x.view(), saved);
  adapter.zero_grad();
  HostMatrix dx(x.rows(), x.cols());
  adapter.backward(dx.view(), dy.view(), x.view(), saved);
  std::vector<HostMatrix> once;
  for (const auto& p : adapter.parameters()) once.emplace_back(p.grad);
  adapter.backward(HostView{}, dy.view(), x.view(), saved);
  std::size_t i = 0;
  for (const auto& p : adapter.parameters()) {
    HostMatrix twice = once[i++];
    cpu::scale(twice.view(), 2.0f);
    INFO("parameter ", p.name);
    // g + g is 2g up to one rounding per GEMM block; 1e-6 relative covers it.
    CHECK(relative_error(p.grad, twice.view()) < 1e-6);
  }
}

/// x and dx as windows of wider buffers (ld > cols, as the rows of a strided
/// view) give the same output, dx and parameter grads as compact ones. The
/// same kernels see the same values in the same order, so they agree
/// bitwise. NaN beside x poisons any read outside its window; a sentinel
/// beside dx must survive the backward untouched.
template <class A>
void check_strided_operands(A& adapter, const HostMatrix& x, std::uint64_t seed) {
  const Index pad = 3, rows = x.rows(), in = x.cols(), out = adapter.out_features();
  const HostMatrix dy = random_matrix(rows, out, seed);
  const auto pass = [&](ConstHostView input, HostView dx) {
    typename A::Saved saved;
    HostMatrix y(rows, out);
    adapter.forward(y.view(), input, saved);
    adapter.zero_grad();
    adapter.backward(dx, dy.view(), input, saved);
    std::vector<HostMatrix> grads;
    for (const auto& p : adapter.parameters()) grads.emplace_back(p.grad);
    return std::pair{y, grads};
  };
  HostMatrix dx(rows, in);
  const auto [y, grads] = pass(x.view(), dx.view());

  HostMatrix wide_x(rows, in + pad), wide_dx(rows, in + pad);
  cpu::fill(wide_x.view(), std::numeric_limits<float>::quiet_NaN());
  cpu::copy(wide_x.view().col_block(0, in), x.view());
  cpu::fill(wide_dx.view(), 7.0f);
  cpu::fill(wide_dx.view().col_block(0, in), 0.0f);
  const auto [strided_y, strided_grads] = pass(wide_x.view().col_block(0, in), wide_dx.view().col_block(0, in));
  CHECK(max_abs_diff(strided_y.view(), y.view()) == 0.0);
  CHECK(max_abs_diff(wide_dx.view().col_block(0, in), dx.view()) == 0.0);
  for (Index r = 0; r < rows; ++r)
    for (Index c = in; c < in + pad; ++c) CHECK(wide_dx(r, c) == 7.0f);
  for (std::size_t i = 0; i < grads.size(); ++i) CHECK(max_abs_diff(strided_grads[i].view(), grads[i].view()) == 0.0);
}

/// merge_into(W) then x W^T equals x W^T + adapter(x); delta() is the merged
/// change; unmerge_from restores W.
template <class A>
void check_merge(A& adapter, const HostMatrix& x, std::uint64_t seed) {
  adapter.set_training(false);
  HostMatrix weight = random_matrix(adapter.out_features(), adapter.in_features(), seed);
  const HostMatrix original = weight;
  HostMatrix unmerged(x.rows(), adapter.out_features());
  cpu::gemm(unmerged.view(), x.view(), Op::N, weight.view(), Op::T, 1.0f, 0.0f);
  typename A::Saved saved;
  adapter.forward(unmerged.view(), x.view(), saved);

  adapter.merge_into(weight.view());
  const HostMatrix delta = adapter.delta();
  HostMatrix merged(x.rows(), adapter.out_features());
  cpu::gemm(merged.view(), x.view(), Op::N, weight.view(), Op::T, 1.0f, 0.0f);
  // Same sums in a different order: a few float ulps of the O(1..10) outputs.
  CHECK(relative_error(merged.view(), unmerged.view()) < 1e-5);
  CHECK(max_abs(delta.view()) > 0.1);
  // W + ΔW in float: within one rounding of (|W| + |ΔW|).
  const double bound = 2.4e-7 * (max_abs(original.view()) + max_abs(delta.view()));
  CHECK(max_abs_diff(difference(weight, original).view(), delta.view()) <= bound);

  adapter.unmerge_from(weight.view());
  CHECK(max_abs_diff(weight.view(), original.view()) <= 2.0 * bound);
}

}  // namespace plora::test
