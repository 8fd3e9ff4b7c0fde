#pragma once
// plora::cpu — the Backend on the host. GEMMs with a rank-sized extent
// (<= 16: LoRA's) through the packing-free kernels of rank_gemm.hpp, others
// through Eigen 3.4, or straight through cblas_sgemm when PLORA_USE_CBLAS is
// defined (by CMake's PLORA_USE_OPENBLAS or PLORA_USE_MKL; the latter also
// defines the macro PLORA_USE_MKL); SVD through Eigen. Row-wise kernels are loops the
// compiler vectorises (erf/exp through Eigen's packet math), split over rows
// with OpenMP when the matrix is large enough.
// Eigen never appears in a signature: callers see only plora views.
#include <Eigen/Core>
#include <Eigen/SVD>
#include <unsupported/Eigen/SpecialFunctions>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <span>
#include <type_traits>
#include <vector>

#include "plora/backend/attention_heads.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/backend/cpu/indices.hpp"
#include "plora/backend/cpu/parallel.hpp"
#include "plora/backend/cpu/rank_gemm.hpp"
#include "plora/core/error.hpp"
#include "plora/core/host_matrix.hpp"
#include "plora/core/rng.hpp"

#if defined(PLORA_USE_MKL)
#include <mkl_cblas.h>
#elif defined(PLORA_USE_CBLAS)
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace plora {

namespace detail::cpu {
using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MutMap = Eigen::Map<RowMajor, Eigen::Unaligned, Eigen::OuterStride<>>;
using ConstMap = Eigen::Map<const RowMajor, Eigen::Unaligned, Eigen::OuterStride<>>;

inline MutMap map(HostView v) { return MutMap(v.data, v.rows, v.cols, Eigen::OuterStride<>(v.ld)); }
inline ConstMap map(ConstHostView v) { return ConstMap(v.data, v.rows, v.cols, Eigen::OuterStride<>(v.ld)); }

inline Index op_rows(ConstHostView v, Op op) { return op == Op::N ? v.rows : v.cols; }
inline Index op_cols(ConstHostView v, Op op) { return op == Op::N ? v.cols : v.rows; }

/// One row of n floats as an Eigen array, so erf/exp use Eigen's vectorised packet math.
inline Eigen::Map<Eigen::ArrayXf> row_array(float* data, Index n) { return {data, n}; }
inline Eigen::Map<const Eigen::ArrayXf> row_array(const float* data, Index n) { return {data, n}; }

/// Sixteen floats: one AVX-512 packet, two AVX ones.
using Block = Eigen::Array<float, 16, 1>;
constexpr Index kBlock = 16;
/// body(block) for the n floats at `row`, 16 at a time through an unaligned
/// fixed-size map; the last n mod 16 through a copy padded with `pad`. Every
/// element takes the packet path: on a dynamic-size map Eigen runs the
/// unaligned head and the tail with scalar calls (scalar expf on up to 30 of
/// each 197-wide row of attention scores).
template <class F>
EIGEN_ALWAYS_INLINE void for_blocks(float* row, Index n, float pad, F&& body) {
  Index c = 0;
  for (; c + kBlock <= n; c += kBlock) {
    Eigen::Map<Block> block(row + c);
    body(block);
  }
  if (c == n) return;
  Block tail = Block::Constant(pad);
  std::copy(row + c, row + n, tail.data());
  body(tail);
  std::copy_n(tail.data(), n - c, row + c);
}

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

#ifdef PLORA_USE_CBLAS
/// Row blocks a GEMM of c (m x n) with inner size k is split into: one per
/// thread when every block still has >= 64 rows and the product is large
/// enough (>= 2^21 multiply-adds) to pay for waking the team; else one.
inline Index gemm_row_blocks(Index m, Index n, Index k) {
#ifdef _OPENMP
  const Index threads = omp_in_parallel() ? 1 : Eigen::nbThreads();
  if (threads > 1 && m >= 64 * threads && m * n * k >= (Index{1} << 21)) return threads;
#endif
  (void)m, (void)n, (void)k;
  return 1;
}
#ifdef PLORA_USE_MKL
using BlasInt = MKL_INT;
#else
using BlasInt = blasint;
#endif
inline CBLAS_TRANSPOSE cblas_op(Op op) { return op == Op::N ? CblasNoTrans : CblasTrans; }
inline BlasInt blas_int(Index v) {
  check<ShapeError>(v <= std::numeric_limits<BlasInt>::max(), "cpu::gemm: extent ", v, " exceeds the BLAS integer");
  return static_cast<BlasInt>(v);
}
#endif

/// Whether a linear layer's bias is added after its product rather than
/// preset for a beta = 1 product. MKL's beta = 0 product writes c without
/// touching it first, so adding the bias after saves reading c back
/// (ViT-B/16 forward 1.3-2.9 % faster). OpenBLAS zero-fills c before a
/// beta = 0 product, and Eigen's kernel adds to c, so there the preset
/// takes the zero fill's place (docs/benchmarks.md §10, session 20).
#ifdef PLORA_USE_MKL
constexpr bool kBiasAfterProduct = true;
#else
constexpr bool kBiasAfterProduct = false;
#endif

/// Rows a rank GEMM must stream for its packing-free kernel to run: OpenBLAS
/// and MKL are faster on a few hundred rows (Partial's token tiles), slower on
/// whole activations; Eigen's kernel is slower at every size (docs/benchmarks.md §2, §10).
#ifdef PLORA_USE_CBLAS
constexpr Index kRankGemmMinRows = 256;
#else
constexpr Index kRankGemmMinRows = 0;
#endif

/// y = x/2 (1 + erf(x/√2)) on n floats (Eigen's vectorised erf: within 5e-7
/// absolute of std::erf).
inline void gelu_row(float* y, const float* x, Index n) {
  const auto xr = row_array(x, n);
  row_array(y, n) = 0.5f * xr * (1.0f + (xr * kInvSqrt2).erf());
}

struct NoFinish {
  void operator()(Index) const {}
};
/// What a product's rows take besides the product: a linear layer's bias
/// and residual (either may be empty; only with beta = 0), then finish(r)
/// on each finished row r in the thread that wrote it, while the row is in
/// cache (a fused epilogue).
template <class Finish = NoFinish>
struct RowEpilogue {
  ConstHostView bias, residual;
  Finish finish{};

  static constexpr bool kFinishes = !std::is_same_v<Finish, NoFinish>;
  [[nodiscard]] bool has_terms() const { return !bias.empty() || !residual.empty(); }
  /// Row r of c = bias + residual row r (zeros without either).
  void write_terms(HostView c, Index r) const {
    float* row = c.data + r * c.ld;
    if (bias.empty()) {
      std::fill_n(row, c.cols, 0.0f);
    } else {
      std::copy_n(bias.data, c.cols, row);
    }
    add_residual(row, r, c.cols);
  }
  /// Row r of c += bias + residual row r (the row is in L1 after the first add).
  void add_terms(HostView c, Index r) const {
    float* __restrict row = c.data + r * c.ld;
    const float* __restrict b = bias.data;
    if (!bias.empty())
      for (Index j = 0; j < c.cols; ++j) row[j] += b[j];
    add_residual(row, r, c.cols);
  }

 private:
  void add_residual(float* __restrict row, Index r, Index n) const {
    if (residual.empty()) return;
    const float* __restrict res = residual.data + r * residual.ld;
    for (Index j = 0; j < n; ++j) row[j] += res[j];
  }
};
}  // namespace detail::cpu

struct cpu {
  using Space = Host;
  using Matrix = HostMatrix;
  using Indices = detail::cpu::HostIndices;

  /// Threads the GEMMs and row-wise kernels may use (0 = the OpenMP default).
  static void set_threads(int threads) { Eigen::setNbThreads(threads); }
  /// Threads a call from outside a parallel region splits its work over.
  static int threads() { return Eigen::nbThreads(); }

  static Indices make_indices(std::span<const std::int32_t> ids) { return Indices(ids); }

  // ---- data movement ------------------------------------------------------
  static void upload(HostView dst, ConstHostView src) { copy(dst, src); }
  static void download(HostView dst, ConstHostView src) { copy(dst, src); }
  static void copy(HostView dst, ConstHostView src) {
    require_shape(src, dst.rows, dst.cols, "cpu::copy source");
    for_rows(dst, [&](Index r) { std::copy_n(src.data + r * src.ld, dst.cols, dst.data + r * dst.ld); });
  }
  static void fill(HostView x, float value) {
    for_rows(x, [&](Index r) { std::fill_n(x.data + r * x.ld, x.cols, value); });
  }

  // ---- GEMM ---------------------------------------------------------------
  /// c = alpha * op(a) op(b) + beta * c
  static void gemm(HostView c, ConstHostView a, Op op_a, ConstHostView b, Op op_b, float alpha, float beta) {
    check_gemm_shapes(c, a, op_a, b, op_b);
    gemm_unchecked(c, a, op_a, b, op_b, alpha, beta);
  }

  /// `batch` GEMMs; the i-th uses the views shifted by i * stride elements.
  /// The batch (attention's heads) is split over the threads, each GEMM
  /// single-threaded: small GEMMs scale badly inside.
  static void gemm_strided_batched(HostView c, ConstHostView a, Op op_a, ConstHostView b, Op op_b, float alpha,
                                   float beta, Index batch, Index stride_c, Index stride_a, Index stride_b) {
    check_gemm_shapes(c, a, op_a, b, op_b);
    const auto one = [&](Index i) {
      gemm_unchecked({c.data + i * stride_c, c.rows, c.cols, c.ld}, {a.data + i * stride_a, a.rows, a.cols, a.ld},
                     op_a, {b.data + i * stride_b, b.rows, b.cols, b.ld}, op_b, alpha, beta);
    };
    // A GEMM runs single-threaded inside an OpenMP parallel region.
    detail::cpu::parallel_for(batch, one);
  }

  /// y = x wᵀ + bias + residual (bias 1 x y.cols, residual like y and not
  /// overlapping it; either may be empty): a linear layer's forward, with the residual connection
  /// that may follow it. Each thread joins both to its own row block of the
  /// product, presetting them or adding them after, whichever is faster for
  /// the GEMM kernel (kBiasAfterProduct).
  static void linear(HostView y, ConstHostView x, ConstHostView w, ConstHostView bias, ConstHostView residual = {}) {
    check_linear_shapes(y, x, w, bias, residual);
    gemm_unchecked(y, x, Op::N, w, Op::T, 1.0f, 0.0f, detail::cpu::RowEpilogue<>{bias, residual});
  }
  /// pre = x wᵀ + bias, act = gelu(pre): a linear layer and its activation,
  /// the GELU on each row of the product while the row is in cache. act may
  /// be pre (the GELU in place, when nothing reads the pre-activation).
  static void linear_gelu(HostView pre, HostView act, ConstHostView x, ConstHostView w, ConstHostView bias) {
    check_linear_shapes(pre, x, w, bias, {});
    require_shape(act, pre.rows, pre.cols, "cpu::linear_gelu act");
    const auto gelu = [&](Index r) { detail::cpu::gelu_row(act.data + r * act.ld, pre.data + r * pre.ld, pre.cols); };
    gemm_unchecked(pre, x, Op::N, w, Op::T, 1.0f, 0.0f, detail::cpu::RowEpilogue<decltype(gelu)>{bias, {}, gelu});
  }

  /// Softmax attention of `batch` sequences over `heads` heads, head h the
  /// columns [h d, (h + 1) d) (d = q.cols / heads); for sequence n and head h
  ///   probs_(n,h)   = softmax(scale q_(n,h) k_(n,h)ᵀ + mask row n)  (Tq x T)
  ///   context_(n,h) = probs_(n,h) v_(n,h)                            (Tq x d)
  /// q, context: (batch Tq, heads d); k, v: (batch T, heads d); probs:
  /// (batch heads Tq, T), rows ordered (n, h, query); mask: empty or (batch, T).
  /// One thread runs a whole (n, h) pair, so its scores stay in cache from
  /// the product through the softmax to the product with v.
  static void attention(HostView probs, HostView context, ConstHostView q, ConstHostView k, ConstHostView v,
                        ConstHostView mask, Index heads, float scale) {
    const detail::AttentionShape shape =
        detail::attention_shape<Host>(probs, context, q, k, v, mask, heads, "cpu::attention");
    const Index d = shape.head_dim, queries = shape.queries, tokens = shape.tokens;
    detail::cpu::parallel_for(shape.batch * heads, [&](Index pair) {
      const Index n = pair / heads, h = pair % heads;
      const HostView scores = probs.row_block(pair * queries, queries);
      const ConstHostView qh = q.block(n * queries, h * d, queries, d), kh = k.block(n * tokens, h * d, tokens, d);
      gemm_unchecked(scores, qh, Op::N, kh, Op::T, scale, 0.0f);
      if (!mask.empty()) add_row_vector(scores, mask.row_block(n, 1));
      softmax_rows(scores);
      gemm_unchecked(context.block(n * queries, h * d, queries, d), scores, Op::N,
                     v.block(n * tokens, h * d, tokens, d), Op::N, 1.0f, 0.0f);
    });
  }

  /// attention()'s backward from d_context (like q) and the forward's probs,
  /// q, k, v: per sequence n and head h (dS = softmax'(dP), dP = dC Vᵀ)
  ///   d_value = Pᵀ dC,  d_query = scale dS K,  d_key = scale dSᵀ Q,
  /// written, not accumulated. d_scores (like probs) is the work space of dP
  /// and dS. One thread runs a whole (n, h) pair, as in the forward.
  static void attention_backward(HostView d_query, HostView d_key, HostView d_value, HostView d_scores,
                                 ConstHostView d_context, ConstHostView probs, ConstHostView q, ConstHostView k,
                                 ConstHostView v, Index heads, float scale) {
    const detail::AttentionShape shape = detail::attention_backward_shape<Host>(
        d_query, d_key, d_value, d_scores, d_context, probs, q, k, v, heads, "cpu::attention_backward");
    const Index d = shape.head_dim, queries = shape.queries, tokens = shape.tokens;
    detail::cpu::parallel_for(shape.batch * heads, [&](Index pair) {
      const Index n = pair / heads, h = pair % heads;
      const auto query_side = [&](auto m) { return m.block(n * queries, h * d, queries, d); };
      const auto key_side = [&](auto m) { return m.block(n * tokens, h * d, tokens, d); };
      const HostView ds = d_scores.row_block(pair * queries, queries);
      const ConstHostView p = probs.row_block(pair * queries, queries), dc = query_side(d_context);
      gemm_unchecked(ds, dc, Op::N, key_side(v), Op::T, 1.0f, 0.0f);  // dP
      gemm_unchecked(key_side(d_value), p, Op::T, dc, Op::N, 1.0f, 0.0f);
      softmax_rows_backward(ds, p, ds);
      gemm_unchecked(query_side(d_query), ds, Op::N, key_side(k), Op::N, scale, 0.0f);
      gemm_unchecked(key_side(d_key), ds, Op::T, query_side(q), Op::N, scale, 0.0f);
    });
  }

  // ---- elementwise --------------------------------------------------------
  /// y += alpha * x
  static void axpy(HostView y, float alpha, ConstHostView x) {
    require_shape(x, y.rows, y.cols, "cpu::axpy x");
    for_rows(y, [&](Index r) {
      float* __restrict yr = y.data + r * y.ld;
      const float* __restrict xr = x.data + r * x.ld;
      for (Index c = 0; c < y.cols; ++c) yr[c] += alpha * xr[c];
    });
  }
  static void scale(HostView x, float alpha) {
    for_rows(x, [&](Index r) {
      float* xr = x.data + r * x.ld;
      for (Index c = 0; c < x.cols; ++c) xr[c] *= alpha;
    });
  }
  /// y *= x elementwise
  static void mul(HostView y, ConstHostView x) {
    require_shape(x, y.rows, y.cols, "cpu::mul x");
    for_rows(y, [&](Index r) {
      float* __restrict yr = y.data + r * y.ld;
      const float* __restrict xr = x.data + r * x.ld;
      for (Index c = 0; c < y.cols; ++c) yr[c] *= xr[c];
    });
  }
  /// x[r, :] += bias (1 x cols)
  static void add_row_vector(HostView x, ConstHostView bias) {
    require_shape(bias, 1, x.cols, "cpu::add_row_vector bias");
    for_rows(x, [&](Index r) {
      float* __restrict xr = x.data + r * x.ld;
      const float* __restrict br = bias.data;
      for (Index c = 0; c < x.cols; ++c) xr[c] += br[c];
    });
  }
  /// x[:, c] *= s[c] (s is 1 x cols)
  static void scale_cols(HostView x, ConstHostView s) {
    require_shape(s, 1, x.cols, "cpu::scale_cols s");
    for_rows(x, [&](Index r) {
      float* __restrict xr = x.data + r * x.ld;
      const float* __restrict sr = s.data;
      for (Index c = 0; c < x.cols; ++c) xr[c] *= sr[c];
    });
  }
  /// out = beta * out + sum over rows of x (out is 1 x cols)
  static void column_sums(HostView out, ConstHostView x, float beta) {
    require_shape(out, 1, x.cols, "cpu::column_sums out");
    for (Index c = 0; c < x.cols; ++c) out.data[c] *= beta;
    for (Index r = 0; r < x.rows; ++r)
      for (Index c = 0; c < x.cols; ++c) out.data[c] += x.data[r * x.ld + c];
  }

  // ---- gathers and scatters (Partial adapters, masks) ---------------------
  /// dst[i, :] = src[idx[i], :]
  static void gather_rows(HostView dst, ConstHostView src, const Indices& idx) {
    check_indices(idx, dst.rows, src.rows, "cpu::gather_rows");
    require_shape(dst, dst.rows, src.cols, "cpu::gather_rows dst");
    for (Index i = 0; i < dst.rows; ++i) std::copy_n(src.data + idx[i] * src.ld, dst.cols, dst.data + i * dst.ld);
  }
  /// dst[idx[i], :] += alpha * src[i, :] (serial: indices may repeat)
  static void scatter_add_rows(HostView dst, ConstHostView src, const Indices& idx, float alpha) {
    check_indices(idx, src.rows, dst.rows, "cpu::scatter_add_rows");
    require_shape(src, src.rows, dst.cols, "cpu::scatter_add_rows src");
    for (Index i = 0; i < src.rows; ++i)
      for (Index c = 0; c < dst.cols; ++c) dst.data[idx[i] * dst.ld + c] += alpha * src.data[i * src.ld + c];
  }
  /// dst[:, j] = src[:, idx[j]]
  static void gather_cols(HostView dst, ConstHostView src, const Indices& idx) {
    check_indices(idx, dst.cols, src.cols, "cpu::gather_cols");
    require_shape(dst, src.rows, dst.cols, "cpu::gather_cols dst");
#ifdef PLORA_CPU_LINE_KERNELS
    if (detail::cpu::use_lines(idx)) {
      // Increasing ids, dense enough: per line, the kept lanes packed to the front.
      const auto width = static_cast<std::int32_t>(src.cols);
      for_rows(dst, [&](Index r) { detail::cpu::gather_lines(src.data + r * src.ld, width, dst.data + r * dst.ld, idx); });
      return;
    }
#endif
    gather_cols_unchecked(dst, src, idx, 1);
  }
  /// dst[:, idx[j]] += alpha * src[:, j] (rows in parallel; within a row indices may repeat)
  static void scatter_add_cols(HostView dst, ConstHostView src, const Indices& idx, float alpha) {
    check_indices(idx, src.cols, dst.cols, "cpu::scatter_add_cols");
    require_shape(src, dst.rows, src.cols, "cpu::scatter_add_cols src");
#ifdef PLORA_CPU_LINE_KERNELS
    if (detail::cpu::use_lines(idx)) {
      // Increasing ids, dense enough: per line, the compact run expanded to its kept lanes and added there.
      const auto width = static_cast<std::int32_t>(dst.cols);
      for_rows(dst, [&](Index r) {
        detail::cpu::scatter_add_lines(dst.data + r * dst.ld, width, src.data + r * src.ld, idx, alpha);
      });
      return;
    }
#endif
    scatter_add_cols_unchecked(dst, src, idx, 1, alpha);
  }
  /// dst[r, j] = src[r, table[(r mod period) * dst.cols + j]]: the rows cycle
  /// through the table's `period` index lists (relative-position gathers).
  static void gather_cols_periodic(HostView dst, ConstHostView src, const Indices& table, Index period) {
    check_periodic_table(table, period, dst.cols, src.cols, "cpu::gather_cols_periodic");
    require_shape(dst, src.rows, dst.cols, "cpu::gather_cols_periodic dst");
    gather_cols_unchecked(dst, src, table, period);
  }
  /// dst[r, table[(r mod period) * src.cols + j]] += alpha * src[r, j] (rows in
  /// parallel; within a row indices may repeat)
  static void scatter_add_cols_periodic(HostView dst, ConstHostView src, const Indices& table, Index period,
                                        float alpha) {
    check_periodic_table(table, period, src.cols, dst.cols, "cpu::scatter_add_cols_periodic");
    require_shape(src, dst.rows, src.cols, "cpu::scatter_add_cols_periodic src");
    scatter_add_cols_unchecked(dst, src, table, period, alpha);
  }
  /// Block b of dst = beta * (block b of dst) + (block b of src)^T, src in
  /// blocks of `block_rows` rows, dst in blocks of src.cols rows (beta = 0
  /// writes, never reading dst).
  static void transpose_blocks(HostView dst, ConstHostView src, Index block_rows, float beta) {
    check<ShapeError>(block_rows > 0 && src.rows % block_rows == 0, "cpu::transpose_blocks: ", src.rows,
                      " source rows are not whole blocks of ", block_rows);
    require_shape(dst, src.rows / block_rows * src.cols, block_rows, "cpu::transpose_blocks dst");
    for_rows(dst, [&](Index r) {
      // dst row r is column r mod src.cols of source block r / src.cols.
      const float* s = src.data + r / src.cols * block_rows * src.ld + r % src.cols;
      float* d = dst.data + r * dst.ld;
      if (beta == 0.0f) {
        for (Index j = 0; j < block_rows; ++j) d[j] = s[j * src.ld];
      } else {
        for (Index j = 0; j < block_rows; ++j) d[j] = beta * d[j] + s[j * src.ld];
      }
    });
  }

  // ---- activations and normalisation --------------------------------------
  /// y = gelu(x) = x/2 (1 + erf(x/√2)), the exact erf form.
  static void gelu_forward(HostView y, ConstHostView x) {
    require_shape(x, y.rows, y.cols, "cpu::gelu_forward x");
    for_rows(y, [&](Index r) { detail::cpu::gelu_row(y.data + r * y.ld, x.data + r * x.ld, y.cols); });
  }
  /// dx = dy * gelu'(x), gelu'(x) = (1 + erf(x/√2))/2 + x φ(x)
  static void gelu_backward(HostView dx, ConstHostView dy, ConstHostView x) {
    using namespace detail::cpu;
    require_shape(x, dx.rows, dx.cols, "cpu::gelu_backward x");
    require_shape(dy, dx.rows, dx.cols, "cpu::gelu_backward dy");
    for_rows(dx, [&](Index r) {
      const auto xr = row_array(x.data + r * x.ld, dx.cols);
      const auto dyr = row_array(dy.data + r * dy.ld, dx.cols);
      row_array(dx.data + r * dx.ld, dx.cols) =
          dyr * (0.5f * (1.0f + (xr * kInvSqrt2).erf()) + xr * kInvSqrt2Pi * (-0.5f * xr.square()).exp());
    });
  }

  /// y = (x - mean) * rstd * gamma + beta per row (biased variance, like
  /// PyTorch); saves (mean, rstd) per row in `stats` (rows x 2). The row sums
  /// are Eigen's packet reductions: vectorised, where a plain loop's float
  /// sum must stay scalar to keep its order.
  static void layernorm_forward(HostView y, HostView stats, ConstHostView x, ConstHostView gamma, ConstHostView beta,
                                float eps) {
    using detail::cpu::row_array;
    require_shape(x, y.rows, y.cols, "cpu::layernorm_forward x");
    require_shape(stats, y.rows, 2, "cpu::layernorm_forward stats");
    require_shape(gamma, 1, y.cols, "cpu::layernorm_forward gamma");
    require_shape(beta, 1, y.cols, "cpu::layernorm_forward beta");
    const Index n = y.cols;
    const auto g = row_array(gamma.data, n), b = row_array(beta.data, n);
    for_rows(y, [&](Index r) {
      const auto xr = row_array(x.data + r * x.ld, n);
      const float mean = xr.sum() / static_cast<float>(n);
      const float var = (xr - mean).square().sum() / static_cast<float>(n);
      const float rstd = 1.0f / std::sqrt(var + eps);
      row_array(y.data + r * y.ld, n) = (xr - mean) * (rstd * g) + b;
      stats.data[r * stats.ld] = mean;
      stats.data[r * stats.ld + 1] = rstd;
    });
  }
  /// dx = LN'(x)^T dy; dgamma, dbeta accumulate (+=) unless empty (frozen LN).
  static void layernorm_backward(HostView dx, HostView dgamma, HostView dbeta, ConstHostView dy, ConstHostView x,
                                 ConstHostView stats, ConstHostView gamma) {
    using detail::cpu::row_array;
    require_shape(x, dx.rows, dx.cols, "cpu::layernorm_backward x");
    require_shape(dy, dx.rows, dx.cols, "cpu::layernorm_backward dy");
    require_shape(stats, dx.rows, 2, "cpu::layernorm_backward stats");
    const Index n = dx.cols;
    const bool param_grads = !dgamma.empty();
    const auto gamma_row = row_array(gamma.data, n);
    const auto row = [&](Index r) {
      const auto xr = row_array(x.data + r * x.ld, n);
      const auto dyr = row_array(dy.data + r * dy.ld, n);
      const float mean = stats.data[r * stats.ld], rstd = stats.data[r * stats.ld + 1];
      const auto xhat = (xr - mean) * rstd;
      const auto g = dyr * gamma_row;
      const float inv_n = 1.0f / static_cast<float>(n);
      const float sum_g = g.sum(), sum_g_xhat = (g * xhat).sum();
      if (param_grads) {
        row_array(dgamma.data, n) += dyr * xhat;
        row_array(dbeta.data, n) += dyr;
      }
      row_array(dx.data + r * dx.ld, n) = rstd * (g - inv_n * (sum_g + xhat * sum_g_xhat));
    };
    // dgamma/dbeta accumulate over rows: a trainable LayerNorm runs serially.
    if (param_grads) {
      for (Index r = 0; r < dx.rows; ++r) row(r);
    } else {
      for_rows(dx, row);
    }
  }

  /// In-place numerically stable softmax over each row. Eigen's vectorised
  /// exp clamps its argument near log(FLT_MIN) and gives masked entries (scores
  /// of -inf or the float minimum) a denormal instead of 0, so exponentials
  /// below FLT_MIN are flushed to exactly 0.
  static void softmax_rows(HostView x) {
    using namespace detail::cpu;
    constexpr float kFloatMin = std::numeric_limits<float>::min();
    constexpr float kInfinity = std::numeric_limits<float>::infinity();
    for_rows(x, [&](Index r) {
      float* row = x.data + r * x.ld;
      const float max = row_array(row, x.cols).maxCoeff();
      // The padding, -inf, adds exp(-inf) = 0. Exponentials below FLT_MIN are
      // summed before the flush, which leaves the sum as is: it is >= 1 (the
      // maximum's exp(0)), so they are far below its rounding.
      Block sums = Block::Zero();
      for_blocks(row, x.cols, -kInfinity, [&](auto& block) {
        block = (block - max).exp();
        sums += block;
      });
      const float inv_sum = 1.0f / sums.sum();
      // A plain loop, not select(): Eigen 3.4's select() is not vectorised.
      for (Index c = 0; c < x.cols; ++c) row[c] = row[c] < kFloatMin ? 0.0f : row[c] * inv_sum;
    });
  }
  /// dx = y * (dy - sum(dy * y)) per row, y the softmax output; dx may be dy
  /// (in place: each row's sum is taken before the row is written).
  static void softmax_rows_backward(HostView dx, ConstHostView y, ConstHostView dy) {
    using detail::cpu::row_array;
    require_shape(y, dx.rows, dx.cols, "cpu::softmax_rows_backward y");
    require_shape(dy, dx.rows, dx.cols, "cpu::softmax_rows_backward dy");
    for_rows(dx, [&](Index r) {
      const auto yr = row_array(y.data + r * y.ld, dx.cols);
      const auto dyr = row_array(dy.data + r * dy.ld, dx.cols);
      row_array(dx.data + r * dx.ld, dx.cols) = yr * (dyr - (dyr * yr).sum());
    });
  }

  /// Mean softmax cross-entropy over rows; writes d(loss)/d(logits) to dlogits.
  static float cross_entropy(HostView dlogits, ConstHostView logits, const Indices& labels) {
    require_shape(logits, dlogits.rows, dlogits.cols, "cpu::cross_entropy logits");
    check<ShapeError>(static_cast<Index>(labels.size()) == logits.rows, "cpu::cross_entropy: ", labels.size(),
                      " labels for ", logits.rows, " rows of logits");
    copy(dlogits, logits);
    softmax_rows(dlogits);
    const float inv_rows = 1.0f / static_cast<float>(logits.rows);
    double loss = 0.0;
    for (Index r = 0; r < logits.rows; ++r) {
      const std::int32_t label = labels[static_cast<std::size_t>(r)];
      check<ValueError>(label >= 0 && label < logits.cols, "cpu::cross_entropy: label ", label, " of row ", r,
                        " is outside [0, ", logits.cols, ")");
      float* dr = dlogits.data + r * dlogits.ld;
      loss -= std::log(std::max(dr[label], 1e-38f));
      dr[label] -= 1.0f;
      for (Index c = 0; c < logits.cols; ++c) dr[c] *= inv_rows;
    }
    return static_cast<float>(loss / static_cast<double>(logits.rows));
  }

  /// Inverted-dropout mask: each element is 0 with probability p, else 1/(1-p);
  /// element (r, c) uses draw offset + r * cols + c of stream (seed, stream).
  static void dropout_mask(HostView mask, float p, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset) {
    check<ValueError>(p >= 0.0f && p < 1.0f, "dropout probability ", p, " is outside [0, 1)");
    const float keep_scale = 1.0f / (1.0f - p);
    for_rows(mask, [&](Index r) {
      for (Index c = 0; c < mask.cols; ++c) {
        const auto index = offset + static_cast<std::uint64_t>(r * mask.cols + c);
        mask.data[r * mask.ld + c] = RandomStream::uniform_at(seed, stream, index) < p ? 0.0f : keep_scale;
      }
    });
  }

  // ---- reductions ---------------------------------------------------------
  static double sum_squares(ConstHostView x) {
    double total = 0.0;
    for (Index r = 0; r < x.rows; ++r)
      for (Index c = 0; c < x.cols; ++c) total += static_cast<double>(x.data[r * x.ld + c]) * x.data[r * x.ld + c];
    return total;
  }
  static bool all_finite(ConstHostView x) {
    for (Index r = 0; r < x.rows; ++r)
      for (Index c = 0; c < x.cols; ++c)
        if (!std::isfinite(x.data[r * x.ld + c])) return false;
    return true;
  }

  // ---- optimizer updates --------------------------------------------------
  /// One AdamW step (decoupled weight decay, bias-corrected moments), as torch.optim.AdamW.
  static void adamw_step(HostView param, ConstHostView grad, HostView m, HostView v, const AdamWStep& s) {
    require_shape(grad, param.rows, param.cols, "cpu::adamw_step grad");
    require_shape(m, param.rows, param.cols, "cpu::adamw_step m");
    require_shape(v, param.rows, param.cols, "cpu::adamw_step v");
    const float step_size = s.lr / s.bias_correction1;
    const float inv_sqrt_bc2 = 1.0f / std::sqrt(s.bias_correction2);
    for_rows(param, [&](Index r) {
      for (Index c = 0; c < param.cols; ++c) {
        float& p = param.data[r * param.ld + c];
        float& mr = m.data[r * m.ld + c];
        float& vr = v.data[r * v.ld + c];
        const float g = grad.data[r * grad.ld + c];
        p *= 1.0f - s.lr * s.weight_decay;
        mr = s.beta1 * mr + (1.0f - s.beta1) * g;
        vr = s.beta2 * vr + (1.0f - s.beta2) * g * g;
        p -= step_size * mr / (std::sqrt(vr) * inv_sqrt_bc2 + s.eps);
      }
    });
  }
  /// One SGD step with optional momentum / Nesterov / L2 weight decay, as torch.optim.SGD.
  static void sgd_step(HostView param, ConstHostView grad, HostView momentum_buffer, const SgdStep& s) {
    require_shape(grad, param.rows, param.cols, "cpu::sgd_step grad");
    require_shape(momentum_buffer, param.rows, param.cols, "cpu::sgd_step momentum_buffer");
    for_rows(param, [&](Index r) {
      for (Index c = 0; c < param.cols; ++c) {
        float& p = param.data[r * param.ld + c];
        float d = grad.data[r * grad.ld + c] + s.weight_decay * p;
        if (s.momentum != 0.0f) {
          float& b = momentum_buffer.data[r * momentum_buffer.ld + c];
          b = s.first_step ? d : s.momentum * b + (1.0f - s.dampening) * d;
          d = s.nesterov ? d + s.momentum * b : b;
        }
        p -= s.lr * d;
      }
    });
  }

  // ---- decompositions -----------------------------------------------------
  /// Thin SVD a = u diag(s) vt with singular values descending; u is
  /// (m x k), s is (1 x k), vt is (k x n), k = min(m, n). Eigen's BDCSVD.
  /// A template so that only a file that decomposes instantiates it: GCC
  /// spends ~40 s on BDCSVD, which every file including this one paid.
  template <class Decomposition = Eigen::BDCSVD<Eigen::MatrixXf>>
  static void svd(Matrix& u, Matrix& s, Matrix& vt, ConstHostView a) {
    using namespace detail::cpu;
    const Eigen::MatrixXf dense = map(a);
    Decomposition decomposition(dense, Eigen::ComputeThinU | Eigen::ComputeThinV);
    // On failure (NaN or Inf in a) Eigen leaves the factors uncomputed.
    check<NumericError>(decomposition.info() == Eigen::Success, "cpu::svd: the ", a.rows, " x ", a.cols,
                        " matrix could not be decomposed (it holds NaN or Inf)");
    const Index k = std::min(a.rows, a.cols);
    u = Matrix(a.rows, k);
    s = Matrix(1, k);
    vt = Matrix(k, a.cols);
    map(u.view()) = decomposition.matrixU();
    map(vt.view()) = decomposition.matrixV().transpose();
    for (Index i = 0; i < k; ++i) s(0, i) = decomposition.singularValues()(i);
  }

 private:
  static void check_gemm_shapes(ConstHostView c, ConstHostView a, Op op_a, ConstHostView b, Op op_b) {
    using namespace detail::cpu;
    check<ShapeError>(op_rows(a, op_a) == c.rows && op_cols(b, op_b) == c.cols && op_cols(a, op_a) == op_rows(b, op_b),
                      "cpu::gemm: op(a) is ", op_rows(a, op_a), " x ", op_cols(a, op_a), ", op(b) is ",
                      op_rows(b, op_b), " x ", op_cols(b, op_b), ", c is ", c.rows, " x ", c.cols);
  }
  static void check_linear_shapes(ConstHostView y, ConstHostView x, ConstHostView w, ConstHostView bias,
                                  ConstHostView residual) {
    check_gemm_shapes(y, x, Op::N, w, Op::T);
    if (!bias.empty()) require_shape(bias, 1, y.cols, "cpu::linear bias");
    if (!residual.empty()) require_shape(residual, y.rows, y.cols, "cpu::linear residual");
  }
  /// c = alpha op(a) op(b) + beta c, then the epilogue's terms (only with
  /// beta = 0) and finish on every row.
  template <class Finish = detail::cpu::NoFinish>
  static void gemm_unchecked(HostView c, ConstHostView a, Op op_a, ConstHostView b, Op op_b, float alpha, float beta,
                             const detail::cpu::RowEpilogue<Finish>& epilogue = {}) {
    using namespace detail::cpu;
    if (c.empty()) return;
    // The terms are preset before a beta = 1 product or added to its rows after.
    const bool terms = epilogue.has_terms();
    const auto finish_rows = [&](Index first, Index count, bool add_terms) {
      for (Index r = first; r < first + count; ++r) {
        if (add_terms) epilogue.add_terms(c, r);
        epilogue.finish(r);
      }
    };
    // Eigen's kernel, the rank kernels and k = 0 finish the rows in a pass of their own.
    const auto finish_all = [&](bool add_terms) {
      if (add_terms || RowEpilogue<Finish>::kFinishes) for_rows(c, [&](Index r) { finish_rows(r, 1, add_terms); });
    };
    if (a.empty() || b.empty()) {  // k = 0: no product, only the beta scaling
      preset(c, beta, epilogue);
      finish_all(false);
      return;
    }
    if (rank_gemm::gemm(c, a, op_a, b, op_b, alpha, beta, kRankGemmMinRows)) {
      finish_all(terms);
      return;
    }
#ifdef PLORA_USE_CBLAS
    // One thread pool for everything: a BLAS's own threads would spin
    // against the OpenMP team of the row-wise kernels, so the BLAS runs
    // single-threaded (MKL's sequential library; OpenBLAS told once) and a
    // large GEMM is split into row blocks of c over the OpenMP threads (a
    // block of op(a)'s rows is a pointer offset: rows of a, or columns when
    // op_a = T).
#ifndef PLORA_USE_MKL
    static const bool openblas_single_threaded = (openblas_set_num_threads(1), true);
    (void)openblas_single_threaded;
#endif
    const Index k = op_cols(a, op_a);
    const bool terms_first = terms && !kBiasAfterProduct;
    const auto rows_block = [&](Index first, Index count) {
      const HostView block = c.row_block(first, count);
      if (terms_first)
        for (Index r = first; r < first + count; ++r) epilogue.write_terms(c, r);
      const float* a_block = a.data + (op_a == Op::N ? first * a.ld : first);
      // BLAS never reads c when beta = 0, so no zero-fill is needed.
      cblas_sgemm(CblasRowMajor, cblas_op(op_a), cblas_op(op_b), blas_int(count), blas_int(c.cols), blas_int(k),
                  alpha, a_block, blas_int(std::max<Index>(a.ld, 1)), b.data, blas_int(std::max<Index>(b.ld, 1)),
                  terms_first ? 1.0f : beta, block.data, blas_int(std::max<Index>(c.ld, 1)));
      finish_rows(first, count, terms && !terms_first);
    };
    const Index blocks = gemm_row_blocks(c.rows, c.cols, k);
    const Index block_rows = (c.rows + blocks - 1) / blocks;
    parallel_for(blocks, [&](Index i) {
      const Index first = i * block_rows;
      if (first < c.rows) rows_block(first, std::min(block_rows, c.rows - first));
    });
#else
    preset(c, beta, epilogue);
    auto cm = map(c);
    const auto am = map(a);
    const auto bm = map(b);
    if (op_a == Op::N && op_b == Op::N) cm.noalias() += alpha * am * bm;
    if (op_a == Op::N && op_b == Op::T) cm.noalias() += alpha * am * bm.transpose();
    if (op_a == Op::T && op_b == Op::N) cm.noalias() += alpha * am.transpose() * bm;
    if (op_a == Op::T && op_b == Op::T) cm.noalias() += alpha * am.transpose() * bm.transpose();
    finish_all(false);
#endif
  }
  // The column gathers' and scatter-adds' scalar loops, after the caller's checks.
  static void gather_cols_unchecked(HostView dst, ConstHostView src, const Indices& table, Index period) {
    for_rows(dst, [&](Index r) {
      const std::int32_t* ids = table.data() + (r % period) * dst.cols;
      // restrict: the rows never overlap, which lets the compiler vectorise the gather.
      const float* __restrict s = src.data + r * src.ld;
      float* __restrict d = dst.data + r * dst.ld;
      for (Index j = 0; j < dst.cols; ++j) d[j] = s[ids[j]];
    });
  }
  static void scatter_add_cols_unchecked(HostView dst, ConstHostView src, const Indices& table, Index period,
                                         float alpha) {
    for_rows(dst, [&](Index r) {
      const std::int32_t* ids = table.data() + (r % period) * src.cols;
      const float* __restrict s = src.data + r * src.ld;
      float* __restrict d = dst.data + r * dst.ld;
      for (Index j = 0; j < src.cols; ++j) d[ids[j]] += alpha * s[j];
    });
  }
  template <class F>
  static void for_rows(ConstHostView x, F&& body) {
    detail::cpu::parallel_rows(x.rows, x.cols, body);
  }
  /// c *= beta, with beta = 0 writing the epilogue's terms on every row, or
  /// zeros without them (never 0 * NaN from stale memory).
  template <class Finish>
  static void preset(HostView c, float beta, const detail::cpu::RowEpilogue<Finish>& epilogue) {
    if (beta == 0.0f) {
      for_rows(c, [&](Index r) { epilogue.write_terms(c, r); });
    } else if (beta != 1.0f) {
      scale(c, beta);
    }
  }
  static void check_indices(const Indices& idx, Index expected_count, Index bound, const char* what) {
    check<ShapeError>(static_cast<Index>(idx.size()) == expected_count, what, ": ", idx.size(),
                      " indices for ", expected_count, " slots");
    for (const std::int32_t i : idx)
      check<ShapeError>(i >= 0 && i < bound, what, ": index ", i, " is outside [0, ", bound, ")");
  }
  static void check_periodic_table(const Indices& table, Index period, Index cols, Index bound, const char* what) {
    const Index size = static_cast<Index>(table.size());
    // By division: period * cols must not wrap.
    check<ShapeError>(period > 0 && (cols == 0 ? size == 0 : size % cols == 0 && size / cols == period), what, ": ",
                      size, " indices are not ", period, " lists of ", cols);
    check_indices(table, size, bound, what);
  }
};

static_assert(Backend<cpu>, "plora::cpu must satisfy the Backend concept");

}  // namespace plora
