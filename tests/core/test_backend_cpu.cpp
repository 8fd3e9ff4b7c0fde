// Every CPU backend op against a naive reference or finite differences.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <vector>

#include "plora/backend/cpu/cpu.hpp"
#include "support/numeric.hpp"

using namespace plora;
using plora::test::finite_difference;
using plora::test::max_abs_diff;
using plora::test::random_matrix;
using plora::test::relative_error;
using plora::test::weighted_sum;

namespace {
HostMatrix naive_gemm(const HostMatrix& a, Op op_a, const HostMatrix& b, Op op_b) {
  const Index m = op_a == Op::N ? a.rows() : a.cols(), k = op_a == Op::N ? a.cols() : a.rows();
  const Index n = op_b == Op::N ? b.cols() : b.rows();
  HostMatrix c(m, n);
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      double acc = 0;
      for (Index p = 0; p < k; ++p)
        acc += double(op_a == Op::N ? a(i, p) : a(p, i)) * double(op_b == Op::N ? b(p, j) : b(j, p));
      c(i, j) = float(acc);
    }
  return c;
}
}  // namespace

TEST_CASE("HostMatrix refuses shapes whose element count does not fit") {
  const Index big = Index{1} << 32;
  // 2^32 x 2^32 = 2^64 elements wraps to 0 in 64 bits: an empty buffer for a huge shape.
  CHECK_THROWS_WITH_AS(HostMatrix(big, big), doctest::Contains("4294967296 x 4294967296"), ShapeError);
  CHECK_THROWS_WITH_AS((void)HostMatrix::adopt(big, big, {}), doctest::Contains("4294967296 x 4294967296"),
                       ShapeError);
  // 2^31 x 2^31 = 2^62 elements fits an Index, but not its 2^64 bytes a size_t.
  CHECK_THROWS_AS(HostMatrix(big / 2, big / 2), ShapeError);
  CHECK_THROWS_AS(HostMatrix(-1, 2), ShapeError);
  CHECK_THROWS_AS((void)HostMatrix::adopt(2, 2, HostMatrix::Values(3)), ShapeError);
  CHECK(HostMatrix(big, 0).size() == 0);
  CHECK(HostMatrix::adopt(2, 3, HostMatrix::Values(6, 1.0f)).size() == 6);
}

TEST_CASE("gemm with every transpose combination, alpha and beta") {
  for (Op op_a : {Op::N, Op::T})
    for (Op op_b : {Op::N, Op::T}) {
      const HostMatrix a = op_a == Op::N ? random_matrix(5, 7, 1) : random_matrix(7, 5, 1);
      const HostMatrix b = op_b == Op::N ? random_matrix(7, 3, 2) : random_matrix(3, 7, 2);
      HostMatrix c = random_matrix(5, 3, 3);
      const HostMatrix c0 = c;
      cpu::gemm(c.view(), a.view(), op_a, b.view(), op_b, 0.5f, 2.0f);
      const HostMatrix ab = naive_gemm(a, op_a, b, op_b);
      HostMatrix expected(5, 3);
      for (Index i = 0; i < 5; ++i)
        for (Index j = 0; j < 3; ++j) expected(i, j) = 0.5f * ab(i, j) + 2.0f * c0(i, j);
      // 7-term float dot products of O(1) values: error a few ulps of 7.
      CHECK(max_abs_diff(c.view(), expected.view()) < 1e-5);
    }
}

// Large enough that the GEMM is split into row blocks over the threads
// (OpenBLAS builds) or threaded inside Eigen: every block must land in place,
// for op(a) taken from rows (N) and from columns (T) of a, with beta = 0 over
// stale NaNs (never read) and beta = 1.
TEST_CASE("large gemm split over threads equals the naive product") {
  const Index m = 301, n = 67, k = 129;  // 2.6M multiply-adds, odd row count
  for (Op op_a : {Op::N, Op::T}) {
    const HostMatrix a = op_a == Op::N ? random_matrix(m, k, 41) : random_matrix(k, m, 41);
    const HostMatrix b = random_matrix(k, n, 42);
    const HostMatrix expected = naive_gemm(a, op_a, b, Op::N);
    HostMatrix c(m, n);
    for (auto& v : c.values()) v = std::numeric_limits<float>::quiet_NaN();
    cpu::gemm(c.view(), a.view(), op_a, b.view(), Op::N, 1.0f, 0.0f);
    // 129-term float dot products of values in [-1, 1]: below 129 * 2^-24 * 129 ~ 1e-3, typically ~1e-5.
    CHECK(max_abs_diff(c.view(), expected.view()) < 1e-4);
    cpu::gemm(c.view(), a.view(), op_a, b.view(), Op::N, -1.0f, 1.0f);
    CHECK(std::sqrt(cpu::sum_squares(c.view())) < 1e-3);
  }
}

TEST_CASE("gemm on strided sub-views and a shape mismatch error") {
  const HostMatrix big = random_matrix(6, 10, 4);
  const HostMatrix b = random_matrix(4, 3, 5);
  HostMatrix c(3, 3);
  const ConstHostView window = big.view().block(1, 2, 3, 4);  // ld 10
  cpu::gemm(c.view(), window, Op::N, b.view(), Op::N, 1.0f, 0.0f);
  HostMatrix dense(window);
  CHECK(max_abs_diff(c.view(), naive_gemm(dense, Op::N, b, Op::N).view()) < 1e-5);
  HostMatrix wrong(4, 3);
  CHECK_THROWS_AS(cpu::gemm(wrong.view(), window, Op::N, b.view(), Op::N, 1.0f, 0.0f), ShapeError);
}

// Every extent above rank_gemm's kRankMax (16): the BLAS / Eigen path.
TEST_CASE("gemm without a rank extent, every transpose combination") {
  const Index m = 23, n = 19, k = 21;
  for (Op op_a : {Op::N, Op::T})
    for (Op op_b : {Op::N, Op::T}) {
      const HostMatrix a = op_a == Op::N ? random_matrix(m, k, 11) : random_matrix(k, m, 11);
      const HostMatrix b = op_b == Op::N ? random_matrix(k, n, 12) : random_matrix(n, k, 12);
      HostMatrix c = random_matrix(m, n, 13);
      const HostMatrix c0 = c;
      cpu::gemm(c.view(), a.view(), op_a, b.view(), op_b, 0.5f, -2.0f);
      const HostMatrix ab = naive_gemm(a, op_a, b, op_b);
      double worst = 0;
      for (Index i = 0; i < m; ++i)
        for (Index j = 0; j < n; ++j) worst = std::max(worst, std::abs(c(i, j) - (0.5 * ab(i, j) - 2.0 * c0(i, j))));
      // 21-term float dot products of values in [-1, 1]: below 21 * 2^-24 * 21 ~ 3e-5.
      CHECK(worst < 3e-5);
    }
}

// Shapes with one extent <= 16 take rank_gemm's kernels: rank_k (k small, any
// layout), rank_n (n small, op(a) = a), rank_sum (op(a) = a^T, op(b) = b, m or
// n small). Odd extents exercise every packet tail; the largest are split over
// threads. c is a window of a wider matrix (ld > cols), and beta = 0 must not
// read the stale NaNs under it.
TEST_CASE("rank gemms equal the naive product for every layout, alpha and beta") {
  struct Shape {
    Index m, n, k;
  };
  const Shape shapes[] = {{5, 3, 7},   {37, 100, 8}, {70, 131, 16}, {2001, 301, 8}, {45, 8, 300}, {33, 5, 77},
                          {20, 16, 40}, {3001, 8, 97}, {8, 150, 90}, {140, 8, 90}, {9, 11, 300}, {16, 1100, 257}};
  for (const Shape& s : shapes)
    for (Op op_a : {Op::N, Op::T})
      for (Op op_b : {Op::N, Op::T})
        for (const float beta : {0.0f, 1.0f, -2.0f}) {
          CAPTURE(s.m);
          CAPTURE(s.n);
          CAPTURE(s.k);
          CAPTURE(op_a == Op::N);
          CAPTURE(op_b == Op::N);
          CAPTURE(beta);
          const HostMatrix a = op_a == Op::N ? random_matrix(s.m, s.k, 21) : random_matrix(s.k, s.m, 21);
          const HostMatrix b = op_b == Op::N ? random_matrix(s.k, s.n, 22) : random_matrix(s.n, s.k, 22);
          HostMatrix wide = random_matrix(s.m, s.n + 3, 23);
          const HostMatrix wide0 = wide;
          const HostView c = wide.view().block(0, 1, s.m, s.n);
          const HostMatrix c0(ConstHostView{c});
          if (beta == 0.0f)
            for (Index i = 0; i < s.m; ++i)
              for (Index j = 0; j < s.n; ++j) c.data[i * c.ld + j] = std::numeric_limits<float>::quiet_NaN();
          cpu::gemm(c, a.view(), op_a, b.view(), op_b, 0.5f, beta);
          const HostMatrix ab = naive_gemm(a, op_a, b, op_b);
          // k-term float dot products of values in [-1, 1]: |error| <= k * 2^-24 * k.
          const double tolerance = double(s.k) * double(s.k) * 0x1p-24 + 1e-6;
          double worst = 0;
          for (Index i = 0; i < s.m; ++i)
            for (Index j = 0; j < s.n; ++j) {
              const double expected = 0.5 * ab(i, j) + (beta == 0.0f ? 0.0 : beta * c0(i, j));
              worst = std::max(worst, std::abs(double(c.data[i * c.ld + j]) - expected));
            }
          CHECK(worst < tolerance);
          Index touched_outside = 0;  // the columns beside the window stay as they were
          for (Index i = 0; i < s.m; ++i)
            for (const Index j : {Index{0}, s.n + 1, s.n + 2}) touched_outside += wide(i, j) != wide0(i, j);
          CHECK(touched_outside == 0);
        }
}

TEST_CASE("strided batched gemm equals per-batch gemm") {
  const HostMatrix a = random_matrix(2 * 4, 3, 6), b = random_matrix(2 * 5, 3, 7);
  HostMatrix c(2 * 4, 5);
  cpu::gemm_strided_batched(c.view().row_block(0, 4), a.view().row_block(0, 4), Op::N, b.view().row_block(0, 5), Op::T,
                            1.0f, 0.0f, 2, 4 * 5, 4 * 3, 5 * 3);
  for (Index i = 0; i < 2; ++i) {
    HostMatrix ai(a.view().row_block(i * 4, 4)), bi(b.view().row_block(i * 5, 5)), ci(c.view().row_block(i * 4, 4));
    CHECK(max_abs_diff(ci.view(), naive_gemm(ai, Op::N, bi, Op::T).view()) < 1e-5);
  }
}

TEST_CASE("gathers and scatter-adds over rows and columns") {
  const HostMatrix src = random_matrix(4, 5, 8);
  const auto rows = cpu::make_indices(std::vector<std::int32_t>{3, 0});
  HostMatrix gathered(2, 5);
  cpu::gather_rows(gathered.view(), src.view(), rows);
  for (Index c = 0; c < 5; ++c) {
    CHECK(gathered(0, c) == src(3, c));
    CHECK(gathered(1, c) == src(0, c));
  }
  HostMatrix acc(4, 5);
  cpu::scatter_add_rows(acc.view(), gathered.view(), rows, 2.0f);
  CHECK(acc(3, 1) == 2.0f * src(3, 1));
  CHECK(acc(1, 1) == 0.0f);

  const auto cols = cpu::make_indices(std::vector<std::int32_t>{4, 1, 2});
  HostMatrix gathered_cols(4, 3);
  cpu::gather_cols(gathered_cols.view(), src.view(), cols);
  CHECK(gathered_cols(2, 0) == src(2, 4));
  HostMatrix acc_cols(4, 5);
  cpu::scatter_add_cols(acc_cols.view(), gathered_cols.view(), cols, -1.0f);
  CHECK(acc_cols(2, 4) == -src(2, 4));
  CHECK(acc_cols(2, 0) == 0.0f);

  const auto bad = cpu::make_indices(std::vector<std::int32_t>{7, 0});
  CHECK_THROWS_AS(cpu::gather_rows(gathered.view(), src.view(), bad), ShapeError);
}

TEST_CASE("increasing index lists carry their 16-float lines; column gathers and scatter-adds use them") {
  // Ids spanning a full line, a gap of empty lines, single-id lines and the
  // last, partial line of a 53-wide row (53 = 3 * 16 + 5).
  std::vector<std::int32_t> ids;
  for (std::int32_t i = 0; i < 16; ++i) ids.push_back(i);
  for (const std::int32_t i : {35, 47, 48, 50, 52}) ids.push_back(i);
  const auto increasing = cpu::make_indices(ids);
  const auto lines = increasing.lines();
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].wide == 0);
  CHECK(lines[0].kept == 0xFFFF);
  CHECK(lines[0].packed == 0xFFFF);
  CHECK(lines[1].wide == 32);
  CHECK(lines[1].compact == 16);
  CHECK(lines[1].kept == ((1u << 3) | (1u << 15)));
  CHECK(lines[1].packed == 0b11);
  CHECK(lines[2].wide == 48);
  CHECK(lines[2].compact == 18);
  CHECK(lines[2].kept == 0b10101);
  // Each line's lane orders: gather slot i <- the i-th kept lane; scatter
  // kept lane l <- slot (kept lanes below l).
  const auto lanes = increasing.lanes();
  REQUIRE(lanes.size() == 3);
  for (std::uint8_t l = 0; l < 16; ++l) CHECK(lanes[0].gather[l] == l);
  CHECK(lanes[1].gather[0] == 3);
  CHECK(lanes[1].gather[1] == 15);
  CHECK(lanes[1].scatter[3] == 0);
  CHECK(lanes[1].scatter[15] == 1);
  CHECK(std::vector<int>(lanes[2].gather.begin(), lanes[2].gather.begin() + 3) == std::vector<int>{0, 2, 4});
  CHECK(std::vector<int>{lanes[2].scatter[0], lanes[2].scatter[2], lanes[2].scatter[4]} == std::vector<int>{0, 1, 2});
  CHECK(cpu::make_indices(std::vector<std::int32_t>{4, 1, 2}).lines().empty());
  CHECK(cpu::make_indices(std::vector<std::int32_t>{1, 1}).lines().empty());

  // Gathers copy exactly; scatter-adds round like the scalar d += alpha * s
  // (one multiply and one add, or one fused multiply-add: within 1 ulp of
  // the sum, relative 2^-23 of |d| + |alpha s| <= 2). Both run on windows of
  // wider matrices, whose columns beside the window must stay as they were:
  // the line kernels load and store whole (half) lines inside a row and must
  // mask the row's last, partial one and the compact row's end. The wide
  // windows end where their matrices do, so a whole-line access past the
  // last row's end is a heap overflow under the sanitizers.
  const Index rows = 700;  // the scatter (700 x 53) is large enough to split rows over threads, the gather is not
  const auto kept = static_cast<Index>(ids.size());
  const HostMatrix src_wide = random_matrix(rows, 53 + 11, 11);
  const ConstHostView src = src_wide.view().block(0, 11, rows, 53);
  HostMatrix gathered_wide = random_matrix(rows, kept + 5, 13);
  const HostMatrix gathered_before = gathered_wide;
  const HostView gathered = gathered_wide.view().block(0, 2, rows, kept);
  cpu::gather_cols(gathered, src, increasing);
  for (Index r = 0; r < rows; ++r) {
    for (Index j = 0; j < kept; ++j)
      REQUIRE(gathered.data[r * gathered.ld + j] == src.data[r * src.ld + ids[std::size_t(j)]]);
    for (const Index c : {Index{0}, Index{1}, kept + 2, kept + 3, kept + 4})
      REQUIRE(gathered_wide(r, c) == gathered_before(r, c));
  }
  HostMatrix acc_wide = random_matrix(rows, 53 + 11, 12);
  const HostMatrix before = acc_wide;
  cpu::scatter_add_cols(acc_wide.view().block(0, 11, rows, 53), gathered, increasing, 0.5f);
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < 53 + 11; ++c) {
      const auto at = std::find(ids.begin(), ids.end(), static_cast<std::int32_t>(c - 11));
      if (c < 11 || at == ids.end())
        REQUIRE(acc_wide(r, c) == before(r, c));  // not a kept column: left bit for bit
      else
        REQUIRE(std::abs(acc_wide(r, c) - (before(r, c) + 0.5 * double(src_wide(r, c)))) <= 2.4e-7);
    }
}

TEST_CASE("periodic column gathers and scatter-adds cycle rows through an index table; block transposes") {
  // 7 rows over a table of 3 index lists (rows 0, 3, 6 use list 0), lists
  // that repeat and reverse indices, as the relative-position tables do.
  const HostMatrix src = random_matrix(7, 5, 21);
  const std::vector<std::int32_t> ids = {4, 4, 0, 1, 2, 3, 0, 0, 0, 3, 2, 1};
  const auto table = cpu::make_indices(ids);
  HostMatrix gathered(7, 4);
  cpu::gather_cols_periodic(gathered.view(), src.view(), table, 3);
  for (Index r = 0; r < 7; ++r)
    for (Index j = 0; j < 4; ++j) REQUIRE(gathered(r, j) == src(r, ids[std::size_t(r % 3 * 4 + j)]));

  // Each sum has at most 3 terms of size <= 1.5: exact to one rounding per
  // add, well inside 1e-6.
  HostMatrix acc = random_matrix(7, 5, 22);
  const HostMatrix before = acc;
  cpu::scatter_add_cols_periodic(acc.view(), gathered.view(), table, 3, 0.5f);
  for (Index r = 0; r < 7; ++r)
    for (Index c = 0; c < 5; ++c) {
      double expected = before(r, c);
      for (Index j = 0; j < 4; ++j)
        if (ids[std::size_t(r % 3 * 4 + j)] == c) expected += 0.5 * double(gathered(r, j));
      REQUIRE(std::abs(acc(r, c) - expected) <= 1e-6);
    }

  // Period 1 is the plain column gather.
  const auto one_list = cpu::make_indices(std::vector<std::int32_t>{2, 0});
  HostMatrix plain(7, 2), periodic(7, 2);
  cpu::gather_cols(plain.view(), src.view(), one_list);
  cpu::gather_cols_periodic(periodic.view(), src.view(), one_list, 1);
  for (Index r = 0; r < 7; ++r)
    for (Index j = 0; j < 2; ++j) CHECK(plain(r, j) == periodic(r, j));

  CHECK_THROWS_AS(cpu::gather_cols_periodic(gathered.view(), src.view(), table, 2), ShapeError);  // 12 != 2 x 4
  CHECK_THROWS_AS(cpu::gather_cols_periodic(gathered.view(), src.view(), table, 0), ShapeError);
  const auto outside = cpu::make_indices(std::vector<std::int32_t>{0, 1, 2, 5});
  CHECK_THROWS_AS(cpu::gather_cols_periodic(gathered.view(), src.view(), outside, 1), ShapeError);
  CHECK_THROWS_AS(cpu::scatter_add_cols_periodic(acc.view(), gathered.view(), outside, 1, 1.0f), ShapeError);

  // Two blocks of 3 x 5 become two blocks of 5 x 3; beta = 0 overwrites NaN,
  // beta = 2 keeps twice the old value (exact: one multiply by 2 and one add).
  const HostMatrix blocks = random_matrix(6, 5, 23);
  HostMatrix transposed(10, 3);
  cpu::fill(transposed.view(), std::numeric_limits<float>::quiet_NaN());
  cpu::transpose_blocks(transposed.view(), blocks.view(), 3, 0.0f);
  for (Index b = 0; b < 2; ++b)
    for (Index i = 0; i < 3; ++i)
      for (Index c = 0; c < 5; ++c) REQUIRE(transposed(b * 5 + c, i) == blocks(b * 3 + i, c));
  const HostMatrix once = transposed;
  cpu::transpose_blocks(transposed.view(), blocks.view(), 3, 2.0f);
  for (Index r = 0; r < 10; ++r)
    for (Index i = 0; i < 3; ++i) REQUIRE(transposed(r, i) == 2.0f * once(r, i) + once(r, i));
  CHECK_THROWS_AS(cpu::transpose_blocks(transposed.view(), blocks.view(), 4, 0.0f), ShapeError);  // 6 rows
  HostMatrix wrong(5, 3);
  CHECK_THROWS_AS(cpu::transpose_blocks(wrong.view(), blocks.view(), 3, 0.0f), ShapeError);
}

// Finite differences below run in float with h = 1e-2 on O(1) inputs: the
// O(h^2) truncation and O(1e-7/h) rounding errors stay below ~1e-3 relative.
TEST_CASE("gelu backward matches finite differences and gelu is the erf form") {
  HostMatrix x = random_matrix(3, 6, 9, -3.0f, 3.0f);
  const HostMatrix weights = random_matrix(3, 6, 10);
  HostMatrix y(3, 6), dx(3, 6);
  cpu::gelu_forward(y.view(), x.view());
  CHECK(y(0, 0) == doctest::Approx(0.5 * x(0, 0) * (1 + std::erf(x(0, 0) / std::sqrt(2.0)))).epsilon(1e-6));
  cpu::gelu_backward(dx.view(), weights.view(), x.view());
  const auto numeric = finite_difference(x.view(), [&] {
    HostMatrix out(3, 6);
    cpu::gelu_forward(out.view(), x.view());
    return weighted_sum(out.view(), weights.view());
  });
  CHECK(relative_error(dx.view(), numeric.view()) < 2e-3);
}

// Eigen's vectorised erf/exp are within a few float ulps: |erf error| <= 5e-7
// and exp relative error <= 2e-7 (measured against double over [-8, 8]); so
// gelu's absolute error is <= |x|/2 * 5e-7 + one rounding of the result, and
// the bound below (1e-6 · max(1, |x|)) holds with a factor-2 margin.
TEST_CASE("gelu, gelu' and softmax on a large threaded matrix match double references") {
  const Index rows = 300, cols = 257;  // above the size where rows are split over threads; odd width
  const HostMatrix x = random_matrix(rows, cols, 31, -8.0f, 8.0f), dy = random_matrix(rows, cols, 32);
  HostMatrix y(rows, cols), dx(rows, cols);
  cpu::gelu_forward(y.view(), x.view());
  cpu::gelu_backward(dx.view(), dy.view(), x.view());
  double worst_forward = 0, worst_backward = 0;
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) {
      const double v = x(r, c), cdf = 0.5 * (1 + std::erf(v / std::sqrt(2.0)));
      const double pdf = std::exp(-0.5 * v * v) / std::sqrt(2 * std::numbers::pi);
      const double scale = std::max(1.0, std::abs(v));
      worst_forward = std::max(worst_forward, std::abs(y(r, c) - v * cdf) / scale);
      worst_backward = std::max(worst_backward, std::abs(dx(r, c) - dy(r, c) * (cdf + v * pdf)) / scale);
    }
  CHECK(worst_forward < 1e-6);
  CHECK(worst_backward < 1e-6);

  HostMatrix p = x;
  cpu::softmax_rows(p.view());
  double worst_softmax = 0;
  for (Index r = 0; r < rows; ++r) {
    double row_max = -1e30, sum = 0;
    for (Index c = 0; c < cols; ++c) row_max = std::max(row_max, double(x(r, c)));
    for (Index c = 0; c < cols; ++c) sum += std::exp(double(x(r, c)) - row_max);
    for (Index c = 0; c < cols; ++c) {
      const double expected = std::exp(double(x(r, c)) - row_max) / sum;
      worst_softmax = std::max(worst_softmax, std::abs(p(r, c) - expected) / expected);
    }
  }
  // exp's 2e-7 plus the float sum over 257 terms (~257 · 6e-8 worst case).
  CHECK(worst_softmax < 2e-5);
}

TEST_CASE("layernorm forward normalises and backward matches finite differences") {
  HostMatrix x = random_matrix(4, 8, 11, -2.0f, 2.0f);
  HostMatrix gamma = random_matrix(1, 8, 12, 0.5f, 1.5f), beta = random_matrix(1, 8, 13);
  const HostMatrix weights = random_matrix(4, 8, 14);
  const auto run = [&](HostMatrix& y, HostMatrix& stats) {
    cpu::layernorm_forward(y.view(), stats.view(), x.view(), gamma.view(), beta.view(), 1e-5f);
  };
  HostMatrix y(4, 8), stats(4, 2);
  run(y, stats);
  HostMatrix dx(4, 8), dgamma(1, 8), dbeta(1, 8);
  cpu::layernorm_backward(dx.view(), dgamma.view(), dbeta.view(), weights.view(), x.view(), stats.view(), gamma.view());
  const auto loss = [&] {
    HostMatrix out(4, 8), s(4, 2);
    run(out, s);
    return weighted_sum(out.view(), weights.view());
  };
  CHECK(relative_error(dx.view(), finite_difference(x.view(), loss).view()) < 5e-3);
  CHECK(relative_error(dgamma.view(), finite_difference(gamma.view(), loss).view()) < 2e-3);
  CHECK(relative_error(dbeta.view(), finite_difference(beta.view(), loss).view()) < 2e-3);
}

TEST_CASE("layernorm forward on wide rows matches a double-precision reference") {
  // 771 columns: packet reductions with a tail; values in [2, 4] so the
  // mean is not zero.
  const Index rows = 5, cols = 771;
  const HostMatrix x = random_matrix(rows, cols, 21, 2.0f, 4.0f);
  const HostMatrix gamma = random_matrix(1, cols, 22, 0.5f, 1.5f), beta = random_matrix(1, cols, 23);
  HostMatrix y(rows, cols), stats(rows, 2);
  cpu::layernorm_forward(y.view(), stats.view(), x.view(), gamma.view(), beta.view(), 1e-12f);
  double worst = 0;
  for (Index r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (Index c = 0; c < cols; ++c) mean += x(r, c);
    mean /= cols;
    for (Index c = 0; c < cols; ++c) var += (x(r, c) - mean) * (x(r, c) - mean);
    const double rstd = 1.0 / std::sqrt(var / cols + 1e-12);
    CHECK(stats(r, 0) == doctest::Approx(mean).epsilon(1e-6));
    CHECK(stats(r, 1) == doctest::Approx(rstd).epsilon(1e-5));
    for (Index c = 0; c < cols; ++c)
      worst = std::max(worst, std::abs(y(r, c) - ((x(r, c) - mean) * rstd * gamma(0, c) + beta(0, c))));
  }
  // |x - mean| rstd <= ~1.8 here; float sums over 771 terms keep the mean and
  // variance within ~1e-6 relative, so each output within a few 1e-6.
  CHECK(worst < 2e-5);
}

TEST_CASE("softmax rows sum to one and backward matches finite differences") {
  HostMatrix x = random_matrix(3, 5, 15, -4.0f, 4.0f);
  const HostMatrix weights = random_matrix(3, 5, 16);
  HostMatrix y = x;
  cpu::softmax_rows(y.view());
  for (Index r = 0; r < 3; ++r) {
    double sum = 0;
    for (Index c = 0; c < 5; ++c) sum += y(r, c);
    CHECK(sum == doctest::Approx(1.0).epsilon(1e-6));
  }
  HostMatrix dx(3, 5);
  cpu::softmax_rows_backward(dx.view(), y.view(), weights.view());
  const auto numeric = finite_difference(x.view(), [&] {
    HostMatrix out = x;
    cpu::softmax_rows(out.view());
    return weighted_sum(out.view(), weights.view());
  });
  CHECK(relative_error(dx.view(), numeric.view()) < 2e-3);
  // In place (dx = dy), as attention's backward runs it: the same values.
  HostMatrix in_place = weights;
  cpu::softmax_rows_backward(in_place.view(), y.view(), in_place.view());
  CHECK(max_abs_diff(in_place.view(), dx.view()) == 0.0);
}

TEST_CASE("softmax gives masked scores exactly zero, in whole packets and in a row's tail") {
  // 37 columns: two 16-wide blocks and a 5-wide tail. Masked keys carry -inf
  // or the float minimum (an additive padding mask); any probability above 0
  // would let padding leak into attention. A score 87.6 below the maximum has
  // exp = 9.0e-39, below FLT_MIN: flushed to 0 too (a vectorised exp returns
  // a denormal there, which would differ from backend to backend).
  const Index cols = 37;
  HostMatrix x = random_matrix(2, cols, 17, -4.0f, 4.0f);
  const std::vector<Index> masked = {0, 15, 16, 33, 36};
  for (Index r = 0; r < 2; ++r) {
    for (const Index c : masked)
      x(r, c) = r == 0 ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::lowest();
    x(r, 1) = 4.0f;  // the row's maximum
    x(r, 20) = 4.0f - 87.6f;
  }
  cpu::softmax_rows(x.view());
  for (Index r = 0; r < 2; ++r) {
    double sum = 0;
    for (Index c = 0; c < cols; ++c) sum += x(r, c);
    CHECK(sum == doctest::Approx(1.0).epsilon(1e-6));
    for (const Index c : masked) CHECK(x(r, c) == 0.0f);
    CHECK(x(r, 20) == 0.0f);
  }
}

TEST_CASE("attention backward matches finite differences, every query or the first token's") {
  // Loss: sum of context ⊙ W, so d_context = W. Central differences with
  // h = 1e-2 on scores of magnitude <= ~2: truncation O(h^2) ~ 1e-4 relative,
  // float rounding of the loss (~1e-6) / h ~ 1e-4.
  const Index batch = 2, heads = 2, d = 3, tokens = 5;
  const float scale = 0.6f;
  HostMatrix k = random_matrix(batch * tokens, heads * d, 70), v = random_matrix(batch * tokens, heads * d, 71);
  for (const Index queries : {tokens, Index{1}}) {
    CAPTURE(queries);
    HostMatrix q = random_matrix(batch * queries, heads * d, 72);
    const HostMatrix weights = random_matrix(batch * queries, heads * d, 73);
    HostMatrix probs(batch * heads * queries, tokens), context(batch * queries, heads * d);
    const auto loss = [&] {
      cpu::attention(probs.view(), context.view(), q.view(), k.view(), v.view(), {}, heads, scale);
      return weighted_sum(context.view(), weights.view());
    };
    (void)loss();
    // Stale values in every output and in the work space.
    HostMatrix dq = random_matrix(q.rows(), q.cols(), 74), dk = random_matrix(k.rows(), k.cols(), 75),
               dv = random_matrix(v.rows(), v.cols(), 76), d_scores = random_matrix(probs.rows(), tokens, 77);
    cpu::attention_backward(dq.view(), dk.view(), dv.view(), d_scores.view(), weights.view(), probs.view(), q.view(),
                            k.view(), v.view(), heads, scale);
    CHECK(relative_error(dq.view(), finite_difference(q.view(), loss).view()) < 2e-3);
    CHECK(relative_error(dk.view(), finite_difference(k.view(), loss).view()) < 2e-3);
    CHECK(relative_error(dv.view(), finite_difference(v.view(), loss).view()) < 2e-3);
  }
  HostMatrix q(batch * tokens, heads * d), probs(batch * heads * tokens, tokens), d_scores(probs.rows(), tokens);
  HostMatrix dq = q, dk = k, dv = v;
  CHECK_THROWS_AS(cpu::attention_backward(dq.view(), dk.view(), dv.view(), d_scores.view().row_block(0, 4), q.view(),
                                          probs.view(), q.view(), k.view(), v.view(), heads, scale),
                  ShapeError);
  CHECK_THROWS_AS(cpu::attention_backward(dq.view().col_block(0, 5), dk.view(), dv.view(), d_scores.view(), q.view(),
                                          probs.view(), q.view(), k.view(), v.view(), heads, scale),
                  ShapeError);
}

TEST_CASE("cross entropy: loss value, gradient, and out-of-range labels") {
  HostMatrix logits = random_matrix(4, 3, 17, -2.0f, 2.0f);
  const auto labels = cpu::make_indices(std::vector<std::int32_t>{0, 2, 1, 2});
  HostMatrix dlogits(4, 3);
  const float loss = cpu::cross_entropy(dlogits.view(), logits.view(), labels);
  double expected = 0;
  for (Index r = 0; r < 4; ++r) {
    double z = 0;
    for (Index c = 0; c < 3; ++c) z += std::exp(double(logits(r, c)));
    expected += std::log(z) - logits(r, labels[std::size_t(r)]);
  }
  CHECK(loss == doctest::Approx(expected / 4).epsilon(1e-6));
  const auto numeric = finite_difference(logits.view(), [&] {
    HostMatrix scratch(4, 3);
    return double(cpu::cross_entropy(scratch.view(), logits.view(), labels));
  });
  CHECK(relative_error(dlogits.view(), numeric.view()) < 2e-3);
  const auto bad = cpu::make_indices(std::vector<std::int32_t>{0, 3, 1, 2});
  CHECK_THROWS_AS(cpu::cross_entropy(dlogits.view(), logits.view(), bad), ValueError);
}

TEST_CASE("linear: x wT + bias (+ residual, then GELU) on every row, on every GEMM path") {
  // (rows, out, in): the BLAS row split (large enough to be threaded), a
  // rank-sized output (the packing-free kernels), and an empty inner size.
  const auto shapes = {std::array<Index, 3>{300, 200, 100}, std::array<Index, 3>{40, 8, 24},
                       std::array<Index, 3>{5, 6, 0}};
  for (const auto& [rows, out, in] : shapes) {
    CAPTURE(rows);
    const HostMatrix x = random_matrix(rows, in, 41), w = random_matrix(out, in, 42), bias = random_matrix(1, out, 43);
    const HostMatrix residual = random_matrix(rows, out, 46);
    // Stale values in the outputs must not leak into the results.
    HostMatrix y = random_matrix(rows, out, 44), unbiased = random_matrix(rows, out, 45);
    HostMatrix with_residual = random_matrix(rows, out, 47), residual_only = random_matrix(rows, out, 48);
    HostMatrix pre = random_matrix(rows, out, 49), act = random_matrix(rows, out, 50);
    HostMatrix in_place = random_matrix(rows, out, 52);  // pre and act at once
    cpu::linear(y.view(), x.view(), w.view(), bias.view());
    cpu::linear(unbiased.view(), x.view(), w.view(), {});
    cpu::linear(with_residual.view(), x.view(), w.view(), bias.view(), residual.view());
    cpu::linear(residual_only.view(), x.view(), w.view(), {}, residual.view());
    cpu::linear_gelu(pre.view(), act.view(), x.view(), w.view(), bias.view());
    cpu::linear_gelu(in_place.view(), in_place.view(), x.view(), w.view(), bias.view());
    std::array<double, 7> worst{};  // y, unbiased, with_residual, residual_only, pre, act, in_place
    for (Index r = 0; r < rows; ++r)
      for (Index c = 0; c < out; ++c) {
        double product = 0;
        for (Index k = 0; k < in; ++k) product += double(x(r, k)) * w(c, k);
        const double biased = product + bias(0, c);
        const double gelu = 0.5 * biased * (1.0 + std::erf(biased / std::sqrt(2.0)));
        const double errors[] = {y(r, c) - biased,
                                 unbiased(r, c) - product,
                                 with_residual(r, c) - (biased + residual(r, c)),
                                 residual_only(r, c) - (product + residual(r, c)),
                                 pre(r, c) - biased,
                                 act(r, c) - gelu,
                                 in_place(r, c) - gelu};
        for (std::size_t i = 0; i < worst.size(); ++i) worst[i] = std::max(worst[i], std::abs(errors[i]));
      }
    // fp32 sums of <= 100 products of values in [-1, 1] plus two terms: well
    // below 1e-4; GELU adds its erf's 5e-7 (|x| <= ~10 here) and gelu' <= 1.13
    // times the input's error.
    for (std::size_t i = 0; i < worst.size(); ++i) {
      CAPTURE(i);
      CHECK(worst[i] < 1e-4);
    }
  }
  HostMatrix y(3, 4), act(3, 4);
  const HostMatrix x = random_matrix(3, 2, 46), w = random_matrix(4, 2, 47);
  CHECK_THROWS_AS(cpu::linear(y.view(), x.view(), w.view(), random_matrix(1, 3, 48).view()), ShapeError);
  CHECK_THROWS_AS(cpu::linear(y.view(), x.view(), random_matrix(4, 3, 49).view(), {}), ShapeError);
  CHECK_THROWS_AS(cpu::linear(y.view(), x.view(), w.view(), {}, random_matrix(3, 5, 50).view()), ShapeError);
  CHECK_THROWS_AS(cpu::linear_gelu(y.view(), HostMatrix(2, 4).view(), x.view(), w.view(), {}), ShapeError);
  CHECK_THROWS_AS(cpu::linear_gelu(y.view(), act.view(), x.view(), w.view(), random_matrix(1, 5, 51).view()),
                  ShapeError);
}

TEST_CASE("attention: softmax(scale Q Kt + mask) V per sequence and head, every query or the first token's") {
  const Index batch = 3, heads = 4, d = 5, tokens = 19;
  const float scale = 0.4f;
  const HostMatrix k = random_matrix(batch * tokens, heads * d, 60, -2.0f, 2.0f);
  const HostMatrix v = random_matrix(batch * tokens, heads * d, 61);
  HostMatrix mask = random_matrix(batch, tokens, 62, -3.0f, 0.0f);
  mask(1, 4) = -std::numeric_limits<float>::infinity();  // a padded key: probability exactly 0
  mask(2, 0) = std::numeric_limits<float>::lowest();
  for (const Index queries : {tokens, Index{1}}) {
    for (const bool masked : {false, true}) {
      CAPTURE(queries);
      CAPTURE(masked);
      const HostMatrix q = random_matrix(batch * queries, heads * d, 63, -2.0f, 2.0f);
      // Stale outputs must not leak into the results.
      HostMatrix probs = random_matrix(batch * heads * queries, tokens, 64);
      HostMatrix context = random_matrix(batch * queries, heads * d, 65);
      cpu::attention(probs.view(), context.view(), q.view(), k.view(), v.view(), masked ? mask.view() : ConstHostView{},
                     heads, scale);
      double worst_probs = 0, worst_context = 0;
      for (Index n = 0; n < batch; ++n)
        for (Index h = 0; h < heads; ++h)
          for (Index i = 0; i < queries; ++i) {
            std::vector<double> p(static_cast<std::size_t>(tokens));
            double sum = 0;
            for (Index j = 0; j < tokens; ++j) {
              double score = 0;
              for (Index c = 0; c < d; ++c) score += double(q(n * queries + i, h * d + c)) * k(n * tokens + j, h * d + c);
              score = scale * score + (masked ? double(mask(n, j)) : 0.0);
              p[std::size_t(j)] = std::isinf(score) || score < -1e30 ? 0.0 : std::exp(score);
              sum += p[std::size_t(j)];
            }
            const Index row = (n * heads + h) * queries + i;
            for (Index j = 0; j < tokens; ++j) {
              p[std::size_t(j)] /= sum;
              worst_probs = std::max(worst_probs, std::abs(probs(row, j) - p[std::size_t(j)]));
              if (p[std::size_t(j)] == 0.0) CHECK(probs(row, j) == 0.0f);
            }
            for (Index c = 0; c < d; ++c) {
              double expected = 0;
              for (Index j = 0; j < tokens; ++j) expected += p[std::size_t(j)] * v(n * tokens + j, h * d + c);
              worst_context = std::max(worst_context, std::abs(context(n * queries + i, h * d + c) - expected));
            }
          }
      // Scores: fp32 sums of 5 products (|score| <= 8): ~1e-6 absolute; exp
      // and the normalisation add a few ulp of probabilities <= 1.
      CHECK(worst_probs < 1e-5);
      CHECK(worst_context < 1e-5);
    }
  }
  HostMatrix probs(batch * heads * tokens, tokens), context(batch * tokens, heads * d);
  const HostMatrix q = random_matrix(batch * tokens, heads * d, 66);
  CHECK_THROWS_AS(cpu::attention(probs.view(), context.view(), q.view(), k.view(), v.view(), {}, 3, scale),
                  ShapeError);  // 20 columns do not split into 3 heads
  CHECK_THROWS_AS(cpu::attention(probs.view(), context.view(), q.view(), k.view().row_block(0, 50), v.view(), {}, heads,
                                 scale),
                  ShapeError);  // 50 key rows are not whole sequences
  CHECK_THROWS_AS(cpu::attention(probs.view().row_block(0, 10), context.view(), q.view(), k.view(), v.view(), {}, heads,
                                 scale),
                  ShapeError);
  CHECK_THROWS_AS(cpu::attention(probs.view(), context.view(), q.view(), k.view(), v.view(),
                                 random_matrix(batch, tokens + 1, 67).view(), heads, scale),
                  ShapeError);
}

TEST_CASE("row vectors, column sums, scaling and reductions") {
  HostMatrix x = random_matrix(3, 4, 18);
  const HostMatrix x0 = x, bias = random_matrix(1, 4, 19);
  cpu::add_row_vector(x.view(), bias.view());
  CHECK(x(2, 3) == x0(2, 3) + bias(0, 3));
  HostMatrix sums = bias;
  cpu::column_sums(sums.view(), x0.view(), 1.0f);
  CHECK(sums(0, 1) == doctest::Approx(bias(0, 1) + x0(0, 1) + x0(1, 1) + x0(2, 1)));
  cpu::scale_cols(x.view(), bias.view());
  CHECK(x(1, 2) == (x0(1, 2) + bias(0, 2)) * bias(0, 2));
  CHECK(cpu::sum_squares(bias.view()) ==
        doctest::Approx(bias(0, 0) * bias(0, 0) + bias(0, 1) * bias(0, 1) + bias(0, 2) * bias(0, 2) + bias(0, 3) * bias(0, 3)));
  CHECK(cpu::all_finite(x.view()));
  x(1, 1) = std::nanf("");
  CHECK_FALSE(cpu::all_finite(x.view()));
}

TEST_CASE("dropout mask keeps 1 - p in expectation and is a function of the seed") {
  HostMatrix a(100, 100), b(100, 100);
  cpu::dropout_mask(a.view(), 0.25f, 5, 6, 0);
  cpu::dropout_mask(b.view(), 0.25f, 5, 6, 0);
  CHECK(max_abs_diff(a.view(), b.view()) == 0.0);
  double kept = 0;
  for (float v : a.values()) {
    REQUIRE((v == 0.0f || v == doctest::Approx(1.0f / 0.75f)));
    kept += v != 0.0f;
  }
  // Binomial(10000, 0.75): std 43; allow 5 sigma.
  CHECK(std::abs(kept - 7500) < 5 * 43.3);
  CHECK_THROWS_AS(cpu::dropout_mask(a.view(), 1.0f, 5, 6, 0), ValueError);
}

TEST_CASE("thin SVD reconstructs the matrix with descending singular values") {
  const HostMatrix a = random_matrix(6, 4, 20);
  HostMatrix u, s, vt;
  cpu::svd(u, s, vt, a.view());
  CHECK(u.rows() == 6);
  CHECK(s.cols() == 4);
  CHECK(vt.rows() == 4);
  for (Index i = 1; i < 4; ++i) CHECK(s(0, i - 1) >= s(0, i));
  HostMatrix us = u;
  cpu::scale_cols(us.view(), s.view());
  HostMatrix back(6, 4);
  cpu::gemm(back.view(), us.view(), Op::N, vt.view(), Op::N, 1.0f, 0.0f);
  CHECK(max_abs_diff(back.view(), a.view()) < 1e-5);
}

TEST_CASE("HostMatrix storage starts on a cache line, whatever the heap did before") {
  // Vectorised reductions peel up to the first aligned packet, so an unaligned
  // buffer would change their summation order and the run's rounding.
  std::vector<std::vector<char>> clutter;
  for (const Index cols : {Index{1}, Index{3}, Index{17}, Index{768}, Index{100003}}) {
    clutter.emplace_back(static_cast<std::size_t>(cols % 13 + 1));  // odd-sized allocations in between
    const HostMatrix m(2, cols);
    CHECK(reinterpret_cast<std::uintptr_t>(m.data()) % 64 == 0);
    const HostMatrix copy(m.view());
    CHECK(reinterpret_cast<std::uintptr_t>(copy.data()) % 64 == 0);
  }
  const HostMatrix adopted = HostMatrix::adopt(2, 2, HostMatrix::Values{1, 2, 3, 4});
  CHECK(adopted(1, 0) == 3.0f);
  CHECK(reinterpret_cast<std::uintptr_t>(adopted.data()) % 64 == 0);
  CHECK_THROWS_WITH_AS((void)HostMatrix::adopt(2, 3, HostMatrix::Values{1, 2}),
                       doctest::Contains("2 values given for a 2 x 3"), ShapeError);
  CHECK_THROWS_WITH_AS(HostMatrix(3, 1, std::vector<float>{1, 2}), doctest::Contains("2 values given for a 3 x 1"),
                       ShapeError);
}
