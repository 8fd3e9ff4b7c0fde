#pragma once
// plora::cuda — the Backend on an NVIDIA GPU: GEMMs through cuBLAS (fp32 by
// default, TF32 / BF16 tensor cores as an opt-in with fp32 accumulation), SVD
// through cuSOLVER (Jacobi), reductions through CUB, and our own kernels for
// everything row- or element-wise. Semantics, argument order, validation and
// error types are those of plora::cpu; the matrices live in device memory.
//
// Compiles only under nvcc with --extended-lambda (a .cu translation unit).
// Every op is enqueued on one stream; ops that return a host value
// (cross_entropy, sum_squares, all_finite, svd's convergence check, download)
// wait for it.
#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>

#include "plora/backend/attention_heads.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/backend/cuda/kernels.cuh"
#include "plora/core/error.hpp"
#include "plora/core/rng.hpp"

namespace plora {

namespace detail::cuda {
// The column gather and scatter-add kernels of plora::cuda, after its checks
// (free functions: nvcc rejects device lambdas in private members).
inline void gather_cols(View<Device> dst, ConstView<Device> src, const DeviceIndices& table, Index period) {
  const std::int32_t* ids = table.data();
  for_each_element(
      dst.rows, dst.cols,
      [=] __device__(Index r, Index j) {
        dst.data[r * dst.ld + j] = src.data[r * src.ld + ids[r % period * dst.cols + j]];
      },
      "cuda::gather_cols");
}
inline void scatter_add_cols(View<Device> dst, ConstView<Device> src, const DeviceIndices& table, Index period,
                             float alpha) {
  const std::int32_t* ids = table.data();
  for_each_element(
      src.rows, src.cols,
      [=] __device__(Index r, Index j) {
        atomicAdd(dst.data + r * dst.ld + ids[r % period * src.cols + j], alpha * src.data[r * src.ld + j]);
      },
      "cuda::scatter_add_cols");
}
}  // namespace detail::cuda

struct cuda {
  using Space = Device;
  using Matrix = DeviceMatrix;
  using Indices = DeviceIndices;
  using MemoryStats = detail::cuda::MemoryStats;

  /// Arithmetic of GEMMs (inputs and outputs stay fp32; accumulation is fp32).
  enum class MathMode {
    Fp32,  ///< full fp32 (the default)
    Tf32,  ///< tensor cores with inputs rounded to TF32 (10-bit mantissa)
    Bf16,  ///< tensor cores with inputs rounded to BF16 (7-bit mantissa)
  };
  /// Process-wide; applies to the GEMMs issued after the call.
  static void set_math_mode(MathMode mode) { math_mode_setting().store(mode); }
  static MathMode math_mode() { return math_mode_setting().load(); }
  /// Sets the math mode for its lifetime and then restores the one before.
  class MathModeScope {
   public:
    explicit MathModeScope(MathMode mode) : previous_(math_mode()) { set_math_mode(mode); }
    MathModeScope(const MathModeScope&) = delete;
    MathModeScope& operator=(const MathModeScope&) = delete;
    ~MathModeScope() { set_math_mode(previous_); }

   private:
    MathMode previous_;
  };

  /// Whether a CUDA device can be used, and why not.
  static bool available() { return detail::cuda::device_unavailable_reason().empty(); }
  static std::string unavailable_reason() { return detail::cuda::device_unavailable_reason(); }
  /// The stream every op is enqueued on (for events and interop).
  static cudaStream_t stream() { return detail::cuda::stream(); }
  /// Waits until every op issued so far has finished.
  static void synchronize() { detail::cuda::synchronize(); }
  static MemoryStats memory_stats() { return detail::cuda::pool().stats(); }
  /// Starts memory_stats().peak_bytes_in_use anew from the bytes in use now.
  static void reset_peak_memory() { detail::cuda::pool().reset_peak(); }
  /// Returns the memory pool's cached free blocks to the driver.
  static void release_cached_memory() { detail::cuda::pool().release_cached(); }

  static Indices make_indices(std::span<const std::int32_t> ids) { return Indices(ids); }

  // ---- data movement ------------------------------------------------------
  /// Waits for the copy, so `src` may change as soon as this returns.
  static void upload(View<Device> dst, ConstHostView src) {
    require_shape(src, dst.rows, dst.cols, "cuda::upload source");
    copy_2d(dst.data, dst.ld, src.data, src.ld, dst.rows, dst.cols, cudaMemcpyHostToDevice);
    synchronize();
  }
  static void download(HostView dst, ConstView<Device> src) {
    require_shape(src, dst.rows, dst.cols, "cuda::download source");
    copy_2d(dst.data, dst.ld, src.data, src.ld, dst.rows, dst.cols, cudaMemcpyDeviceToHost);
    synchronize();
  }
  static void copy(View<Device> dst, ConstView<Device> src) {
    require_shape(src, dst.rows, dst.cols, "cuda::copy source");
    copy_2d(dst.data, dst.ld, src.data, src.ld, dst.rows, dst.cols, cudaMemcpyDeviceToDevice);
  }
  static void fill(View<Device> x, float value) {
    detail::cuda::for_each_element(
        x.rows, x.cols, [=] __device__(Index r, Index c) { x.data[r * x.ld + c] = value; }, "cuda::fill");
  }

  // ---- GEMM ---------------------------------------------------------------
  /// c = alpha * op(a) op(b) + beta * c
  static void gemm(View<Device> c, ConstView<Device> a, Op op_a, ConstView<Device> b, Op op_b, float alpha,
                   float beta) {
    gemm_batched(c, a, op_a, b, op_b, alpha, beta, 1, 0, 0, 0, "cuda::gemm");
  }
  /// `batch` GEMMs; the i-th uses the views shifted by i * stride elements.
  static void gemm_strided_batched(View<Device> c, ConstView<Device> a, Op op_a, ConstView<Device> b, Op op_b,
                                   float alpha, float beta, Index batch, Index stride_c, Index stride_a,
                                   Index stride_b) {
    gemm_batched(c, a, op_a, b, op_b, alpha, beta, batch, stride_c, stride_a, stride_b, "cuda::gemm_strided_batched");
  }

  /// Softmax attention of `batch` sequences over `heads` heads (as
  /// cpu::attention): probs_(n,h) = softmax(scale q_(n,h) k_(n,h)ᵀ + mask row
  /// n), context_(n,h) = probs_(n,h) v_(n,h). Strided-batched GEMMs, the
  /// mask's elementwise add and one softmax kernel.
  static void attention(View<Device> probs, View<Device> context, ConstView<Device> q, ConstView<Device> k,
                        ConstView<Device> v, ConstView<Device> mask, Index heads, float scale) {
    using namespace detail;
    const AttentionShape s = attention_shape<Device>(probs, context, q, k, v, mask, heads, "cuda::attention");
    const Index d = s.head_dim;
    per_head_gemm<cuda>(score_heads(probs, heads, s.queries), activation_heads(q, s.queries, d), Op::N,
                        activation_heads(k, s.tokens, d), Op::T, scale, 0.0f, s.batch, heads);
    if (!mask.empty()) {
      const Index rows_per_sequence = heads * s.queries;
      detail::cuda::for_each_element(
          probs.rows, probs.cols,
          [=] __device__(Index r, Index c) {
            probs.data[r * probs.ld + c] += mask.data[r / rows_per_sequence * mask.ld + c];
          },
          "cuda::attention mask");
    }
    softmax_rows(probs);
    per_head_gemm<cuda>(activation_heads(context, s.queries, d), score_heads(ConstView<Device>(probs), heads, s.queries),
                        Op::N, activation_heads(v, s.tokens, d), Op::N, 1.0f, 0.0f, s.batch, heads);
  }
  /// attention()'s backward (as cpu::attention_backward): d_value = Pᵀ dC,
  /// d_query = scale dS K, d_key = scale dSᵀ Q with dS = softmax'(dC Vᵀ),
  /// written; d_scores (like probs) holds dP, then dS.
  static void attention_backward(View<Device> d_query, View<Device> d_key, View<Device> d_value,
                                 View<Device> d_scores, ConstView<Device> d_context, ConstView<Device> probs,
                                 ConstView<Device> q, ConstView<Device> k, ConstView<Device> v, Index heads,
                                 float scale) {
    using namespace detail;
    const AttentionShape s = attention_backward_shape<Device>(d_query, d_key, d_value, d_scores, d_context, probs, q,
                                                              k, v, heads, "cuda::attention_backward");
    const Index d = s.head_dim, queries = s.queries, tokens = s.tokens;
    const auto ds = score_heads(d_scores, heads, queries);
    const auto cds = score_heads(ConstView<Device>(d_scores), heads, queries), p = score_heads(probs, heads, queries);
    const auto dc = activation_heads(d_context, queries, d);
    per_head_gemm<cuda>(ds, dc, Op::N, activation_heads(v, tokens, d), Op::T, 1.0f, 0.0f, s.batch, heads);
    per_head_gemm<cuda>(activation_heads(d_value, tokens, d), p, Op::T, dc, Op::N, 1.0f, 0.0f, s.batch, heads);
    softmax_rows_backward(d_scores, probs, d_scores);
    per_head_gemm<cuda>(activation_heads(d_query, queries, d), cds, Op::N, activation_heads(k, tokens, d), Op::N, scale,
                        0.0f, s.batch, heads);
    per_head_gemm<cuda>(activation_heads(d_key, tokens, d), cds, Op::T, activation_heads(q, queries, d), Op::N, scale,
                        0.0f, s.batch, heads);
  }

  /// y = x wᵀ + bias + residual (bias 1 x y.cols, residual like y and not
  /// overlapping it; either may be empty): a linear layer's forward with the
  /// residual connection that may follow it. Bias and residual preset y and
  /// the product adds to it (beta = 1). (The CPU backend adds them after the
  /// product instead, faster there; which order is faster on a GPU is not
  /// measured.)
  static void linear(View<Device> y, ConstView<Device> x, ConstView<Device> w, ConstView<Device> bias,
                     ConstView<Device> residual = {}) {
    if (!bias.empty()) require_shape(bias, 1, y.cols, "cuda::linear bias");
    if (!residual.empty()) require_shape(residual, y.rows, y.cols, "cuda::linear residual");
    const bool has_bias = !bias.empty(), has_residual = !residual.empty();
    if (!has_bias && !has_residual) {
      gemm(y, x, Op::N, w, Op::T, 1.0f, 0.0f);
      return;
    }
    detail::cuda::for_each_element(
        y.rows, y.cols,
        [=] __device__(Index r, Index c) {
          y.data[r * y.ld + c] =
              (has_bias ? bias.data[c] : 0.0f) + (has_residual ? residual.data[r * residual.ld + c] : 0.0f);
        },
        "cuda::linear");
    gemm(y, x, Op::N, w, Op::T, 1.0f, 1.0f);
  }
  /// pre = x wᵀ + bias, act = gelu(pre): a linear layer and its activation
  /// (act may be pre: the elementwise GELU reads each element before writing it).
  static void linear_gelu(View<Device> pre, View<Device> act, ConstView<Device> x, ConstView<Device> w,
                          ConstView<Device> bias) {
    linear(pre, x, w, bias);
    gelu_forward(act, pre);
  }

  // ---- elementwise --------------------------------------------------------
  /// y += alpha * x
  static void axpy(View<Device> y, float alpha, ConstView<Device> x) {
    require_shape(x, y.rows, y.cols, "cuda::axpy x");
    detail::cuda::for_each_element(
        y.rows, y.cols, [=] __device__(Index r, Index c) { y.data[r * y.ld + c] += alpha * x.data[r * x.ld + c]; },
        "cuda::axpy");
  }
  static void scale(View<Device> x, float alpha) {
    detail::cuda::for_each_element(
        x.rows, x.cols, [=] __device__(Index r, Index c) { x.data[r * x.ld + c] *= alpha; }, "cuda::scale");
  }
  /// y *= x elementwise
  static void mul(View<Device> y, ConstView<Device> x) {
    require_shape(x, y.rows, y.cols, "cuda::mul x");
    detail::cuda::for_each_element(
        y.rows, y.cols, [=] __device__(Index r, Index c) { y.data[r * y.ld + c] *= x.data[r * x.ld + c]; },
        "cuda::mul");
  }
  /// x[r, :] += bias (1 x cols)
  static void add_row_vector(View<Device> x, ConstView<Device> bias) {
    require_shape(bias, 1, x.cols, "cuda::add_row_vector bias");
    detail::cuda::for_each_element(
        x.rows, x.cols, [=] __device__(Index r, Index c) { x.data[r * x.ld + c] += bias.data[c]; },
        "cuda::add_row_vector");
  }
  /// x[:, c] *= s[c] (s is 1 x cols)
  static void scale_cols(View<Device> x, ConstView<Device> s) {
    require_shape(s, 1, x.cols, "cuda::scale_cols s");
    detail::cuda::for_each_element(
        x.rows, x.cols, [=] __device__(Index r, Index c) { x.data[r * x.ld + c] *= s.data[c]; }, "cuda::scale_cols");
  }
  /// out = beta * out + sum over rows of x (out is 1 x cols)
  static void column_sums(View<Device> out, ConstView<Device> x, float beta) {
    require_shape(out, 1, x.cols, "cuda::column_sums out");
    detail::cuda::column_sums(
        out.data, nullptr, beta, x.rows, x.cols,
        [=] __device__(Index r, Index c) { return float2{x.data[r * x.ld + c], 0.0f}; }, "cuda::column_sums");
  }

  // ---- gathers and scatters (Partial adapters, masks) ---------------------
  /// dst[i, :] = src[idx[i], :]
  static void gather_rows(View<Device> dst, ConstView<Device> src, const Indices& idx) {
    check_indices(idx, dst.rows, src.rows, "cuda::gather_rows");
    require_shape(dst, dst.rows, src.cols, "cuda::gather_rows dst");
    const std::int32_t* ids = idx.data();
    detail::cuda::for_each_element(
        dst.rows, dst.cols,
        [=] __device__(Index i, Index c) { dst.data[i * dst.ld + c] = src.data[Index{ids[i]} * src.ld + c]; },
        "cuda::gather_rows");
  }
  /// dst[idx[i], :] += alpha * src[i, :] (repeated indices accumulate)
  static void scatter_add_rows(View<Device> dst, ConstView<Device> src, const Indices& idx, float alpha) {
    check_indices(idx, src.rows, dst.rows, "cuda::scatter_add_rows");
    require_shape(src, src.rows, dst.cols, "cuda::scatter_add_rows src");
    const std::int32_t* ids = idx.data();
    detail::cuda::for_each_element(
        src.rows, src.cols,
        [=] __device__(Index i, Index c) {
          atomicAdd(dst.data + Index{ids[i]} * dst.ld + c, alpha * src.data[i * src.ld + c]);
        },
        "cuda::scatter_add_rows");
  }
  /// dst[:, j] = src[:, idx[j]]
  static void gather_cols(View<Device> dst, ConstView<Device> src, const Indices& idx) {
    check_indices(idx, dst.cols, src.cols, "cuda::gather_cols");
    require_shape(dst, src.rows, dst.cols, "cuda::gather_cols dst");
    detail::cuda::gather_cols(dst, src, idx, 1);
  }
  /// dst[:, idx[j]] += alpha * src[:, j] (repeated indices accumulate)
  static void scatter_add_cols(View<Device> dst, ConstView<Device> src, const Indices& idx, float alpha) {
    check_indices(idx, src.cols, dst.cols, "cuda::scatter_add_cols");
    require_shape(src, dst.rows, src.cols, "cuda::scatter_add_cols src");
    detail::cuda::scatter_add_cols(dst, src, idx, 1, alpha);
  }
  /// dst[r, j] = src[r, table[(r mod period) * dst.cols + j]]: the rows cycle
  /// through the table's `period` index lists (relative-position gathers).
  static void gather_cols_periodic(View<Device> dst, ConstView<Device> src, const Indices& table, Index period) {
    check_periodic_table(table, period, dst.cols, src.cols, "cuda::gather_cols_periodic");
    require_shape(dst, src.rows, dst.cols, "cuda::gather_cols_periodic dst");
    detail::cuda::gather_cols(dst, src, table, period);
  }
  /// dst[r, table[(r mod period) * src.cols + j]] += alpha * src[r, j]
  /// (repeated indices accumulate)
  static void scatter_add_cols_periodic(View<Device> dst, ConstView<Device> src, const Indices& table, Index period,
                                        float alpha) {
    check_periodic_table(table, period, src.cols, dst.cols, "cuda::scatter_add_cols_periodic");
    require_shape(src, dst.rows, src.cols, "cuda::scatter_add_cols_periodic src");
    detail::cuda::scatter_add_cols(dst, src, table, period, alpha);
  }
  /// Block b of dst = beta * (block b of dst) + (block b of src)^T, src in
  /// blocks of `block_rows` rows, dst in blocks of src.cols rows (beta = 0
  /// writes, never reading dst).
  static void transpose_blocks(View<Device> dst, ConstView<Device> src, Index block_rows, float beta) {
    check<ShapeError>(block_rows > 0 && src.rows % block_rows == 0, "cuda::transpose_blocks: ", src.rows,
                      " source rows are not whole blocks of ", block_rows);
    require_shape(dst, src.rows / block_rows * src.cols, block_rows, "cuda::transpose_blocks dst");
    detail::cuda::for_each_element(
        dst.rows, dst.cols,
        [=] __device__(Index r, Index j) {
          const float value = src.data[(r / src.cols * block_rows + j) * src.ld + r % src.cols];
          float& out = dst.data[r * dst.ld + j];
          out = beta == 0.0f ? value : beta * out + value;
        },
        "cuda::transpose_blocks");
  }

  // ---- activations and normalisation --------------------------------------
  /// y = gelu(x), the exact erf form
  static void gelu_forward(View<Device> y, ConstView<Device> x) {
    require_shape(x, y.rows, y.cols, "cuda::gelu_forward x");
    detail::cuda::for_each_element(
        y.rows, y.cols,
        [=] __device__(Index r, Index c) {
          const float v = x.data[r * x.ld + c];
          y.data[r * y.ld + c] = 0.5f * v * (1.0f + erff(v * kInvSqrt2));
        },
        "cuda::gelu_forward");
  }
  /// dx = dy * gelu'(x)
  static void gelu_backward(View<Device> dx, ConstView<Device> dy, ConstView<Device> x) {
    require_shape(x, dx.rows, dx.cols, "cuda::gelu_backward x");
    require_shape(dy, dx.rows, dx.cols, "cuda::gelu_backward dy");
    detail::cuda::for_each_element(
        dx.rows, dx.cols,
        [=] __device__(Index r, Index c) {
          constexpr float inv_sqrt_2pi = 0.3989422804014327f;
          const float v = x.data[r * x.ld + c];
          const float derivative = 0.5f * (1.0f + erff(v * kInvSqrt2)) + v * inv_sqrt_2pi * expf(-0.5f * v * v);
          dx.data[r * dx.ld + c] = dy.data[r * dy.ld + c] * derivative;
        },
        "cuda::gelu_backward");
  }

  /// y = (x - mean) * rstd * gamma + beta per row (biased variance, like
  /// PyTorch); saves (mean, rstd) per row in `stats` (rows x 2).
  static void layernorm_forward(View<Device> y, View<Device> stats, ConstView<Device> x, ConstView<Device> gamma,
                                ConstView<Device> beta, float eps) {
    require_shape(x, y.rows, y.cols, "cuda::layernorm_forward x");
    require_shape(stats, y.rows, 2, "cuda::layernorm_forward stats");
    require_shape(gamma, 1, y.cols, "cuda::layernorm_forward gamma");
    require_shape(beta, 1, y.cols, "cuda::layernorm_forward beta");
    detail::cuda::launch_per_row(y.rows, "cuda::layernorm_forward", detail::cuda::layernorm_forward_kernel<>, y, stats,
                                 x, gamma, beta, eps);
  }
  /// dx = LN'(x)^T dy; dgamma, dbeta accumulate (+=) unless empty (frozen LN).
  static void layernorm_backward(View<Device> dx, View<Device> dgamma, View<Device> dbeta, ConstView<Device> dy,
                                 ConstView<Device> x, ConstView<Device> stats, ConstView<Device> gamma) {
    require_shape(x, dx.rows, dx.cols, "cuda::layernorm_backward x");
    require_shape(dy, dx.rows, dx.cols, "cuda::layernorm_backward dy");
    require_shape(stats, dx.rows, 2, "cuda::layernorm_backward stats");
    // Checked here although cpu:: does not: a wrong shape would be a silent
    // out-of-bounds access on the device.
    require_shape(gamma, 1, dx.cols, "cuda::layernorm_backward gamma");
    if (!dgamma.empty()) {
      require_shape(dgamma, 1, dx.cols, "cuda::layernorm_backward dgamma");
      require_shape(dbeta, 1, dx.cols, "cuda::layernorm_backward dbeta");
      // Before dx: dx may alias dy.
      detail::cuda::column_sums(
          dgamma.data, dbeta.data, 1.0f, dx.rows, dx.cols,
          [=] __device__(Index r, Index c) {
            const float xhat = (x.data[r * x.ld + c] - stats.data[r * stats.ld]) * stats.data[r * stats.ld + 1];
            const float d = dy.data[r * dy.ld + c];
            return float2{d * xhat, d};
          },
          "cuda::layernorm_backward parameter gradients");
    }
    detail::cuda::launch_per_row(dx.rows, "cuda::layernorm_backward", detail::cuda::layernorm_backward_kernel<>, dx, dy,
                                 x, stats, gamma);
  }

  /// In-place numerically stable softmax over each row.
  static void softmax_rows(View<Device> x) {
    if (x.cols == 0) return;
    detail::cuda::launch_per_row(x.rows, "cuda::softmax_rows", detail::cuda::softmax_rows_kernel<>, x);
  }
  /// dx = y * (dy - sum(dy * y)) per row, y the softmax output; dx may be dy
  /// (in place: each row's sum is taken before the row is written).
  static void softmax_rows_backward(View<Device> dx, ConstView<Device> y, ConstView<Device> dy) {
    require_shape(y, dx.rows, dx.cols, "cuda::softmax_rows_backward y");
    require_shape(dy, dx.rows, dx.cols, "cuda::softmax_rows_backward dy");
    detail::cuda::launch_per_row(dx.rows, "cuda::softmax_rows_backward", detail::cuda::softmax_rows_backward_kernel<>,
                                 dx, y, dy);
  }

  /// Mean softmax cross-entropy over rows; writes d(loss)/d(logits) to dlogits.
  static float cross_entropy(View<Device> dlogits, ConstView<Device> logits, const Indices& labels) {
    require_shape(logits, dlogits.rows, dlogits.cols, "cuda::cross_entropy logits");
    check<ShapeError>(labels.size() == logits.rows, "cuda::cross_entropy: ", labels.size(), " labels for ",
                      logits.rows, " rows of logits");
    for (Index r = 0; r < logits.rows; ++r) {
      const std::int32_t label = labels.host()[static_cast<std::size_t>(r)];
      check<ValueError>(label >= 0 && label < logits.cols, "cuda::cross_entropy: label ", label, " of row ", r,
                        " is outside [0, ", logits.cols, ")");
    }
    const detail::cuda::DeviceBuffer<double> row_loss(static_cast<std::size_t>(logits.rows));
    detail::cuda::launch_per_row(logits.rows, "cuda::cross_entropy", detail::cuda::cross_entropy_kernel<>, dlogits,
                                 logits, labels.data(), 1.0f / static_cast<float>(logits.rows), row_loss.data());
    const double* losses = row_loss.data();
    const double total = detail::cuda::reduce_indices(
        logits.rows, [=] __host__ __device__(Index r) { return losses[r]; }, ::cuda::std::plus<double>{}, 0.0);
    return static_cast<float>(total / static_cast<double>(logits.rows));
  }

  /// Inverted-dropout mask: each element is 0 with probability p, else 1/(1-p);
  /// element (r, c) uses draw offset + r * cols + c of stream (seed, stream),
  /// so the mask equals cpu::dropout_mask's bit for bit.
  static void dropout_mask(View<Device> mask, float p, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset) {
    check<ValueError>(p >= 0.0f && p < 1.0f, "dropout probability ", p, " is outside [0, 1)");
    const float keep_scale = 1.0f / (1.0f - p);
    detail::cuda::for_each_element(
        mask.rows, mask.cols,
        [=] __device__(Index r, Index c) {
          const auto index = offset + static_cast<std::uint64_t>(r * mask.cols + c);
          mask.data[r * mask.ld + c] = RandomStream::uniform_at(seed, stream, index) < p ? 0.0f : keep_scale;
        },
        "cuda::dropout_mask");
  }

  // ---- reductions ---------------------------------------------------------
  static double sum_squares(ConstView<Device> x) {
    if (x.empty()) return 0.0;
    return detail::cuda::reduce_indices(
        x.size(),
        [=] __host__ __device__(Index i) {
          const auto v = static_cast<double>(x.data[(i / x.cols) * x.ld + i % x.cols]);
          return v * v;
        },
        ::cuda::std::plus<double>{}, 0.0);
  }
  static bool all_finite(ConstView<Device> x) {
    if (x.empty()) return true;
    const int non_finite = detail::cuda::reduce_indices(
        x.size(), [=] __host__ __device__(Index i) { return isfinite(x.data[(i / x.cols) * x.ld + i % x.cols]) ? 0 : 1; },
        ::cuda::maximum<int>{}, 0);
    return non_finite == 0;
  }

  // ---- optimizer updates --------------------------------------------------
  /// One AdamW step (decoupled weight decay, bias-corrected moments), as torch.optim.AdamW.
  static void adamw_step(View<Device> param, ConstView<Device> grad, View<Device> m, View<Device> v,
                         const AdamWStep& s) {
    require_shape(grad, param.rows, param.cols, "cuda::adamw_step grad");
    require_shape(m, param.rows, param.cols, "cuda::adamw_step m");
    require_shape(v, param.rows, param.cols, "cuda::adamw_step v");
    const float step_size = s.lr / s.bias_correction1;
    const float inv_sqrt_bc2 = 1.0f / std::sqrt(s.bias_correction2);
    const float decay = 1.0f - s.lr * s.weight_decay;
    const float beta1 = s.beta1, beta2 = s.beta2, eps = s.eps;
    detail::cuda::for_each_element(
        param.rows, param.cols,
        [=] __device__(Index r, Index c) {
          float& p = param.data[r * param.ld + c];
          float& mr = m.data[r * m.ld + c];
          float& vr = v.data[r * v.ld + c];
          const float g = grad.data[r * grad.ld + c];
          p *= decay;
          mr = beta1 * mr + (1.0f - beta1) * g;
          vr = beta2 * vr + (1.0f - beta2) * g * g;
          p -= step_size * mr / (sqrtf(vr) * inv_sqrt_bc2 + eps);
        },
        "cuda::adamw_step");
  }
  /// One SGD step with optional momentum / Nesterov / L2 weight decay, as torch.optim.SGD.
  static void sgd_step(View<Device> param, ConstView<Device> grad, View<Device> momentum_buffer, const SgdStep& s) {
    require_shape(grad, param.rows, param.cols, "cuda::sgd_step grad");
    require_shape(momentum_buffer, param.rows, param.cols, "cuda::sgd_step momentum_buffer");
    detail::cuda::for_each_element(
        param.rows, param.cols,
        [=] __device__(Index r, Index c) {
          float& p = param.data[r * param.ld + c];
          float d = grad.data[r * grad.ld + c] + s.weight_decay * p;
          if (s.momentum != 0.0f) {
            float& b = momentum_buffer.data[r * momentum_buffer.ld + c];
            b = s.first_step ? d : s.momentum * b + (1.0f - s.dampening) * d;
            d = s.nesterov ? d + s.momentum * b : b;
          }
          p -= s.lr * d;
        },
        "cuda::sgd_step");
  }

  // ---- decompositions -----------------------------------------------------
  /// Thin SVD a = u diag(s) vt with singular values descending; u is
  /// (m x k), s is (1 x k), vt is (k x n), k = min(m, n). cuSOLVER's Jacobi
  /// SVD (gesvdj), which serves every shape in its economy mode.
  static void svd(Matrix& u, Matrix& s, Matrix& vt, ConstView<Device> a) {
    const Index m = a.rows, n = a.cols, k = std::min(m, n);
    require_int(std::max(m, n), "cuda::svd: matrix dimension");
    // Copied before the outputs are replaced, as cpu:: does: `a` may view one of
    // them, whose freed block the pool would hand to the next allocation.
    Matrix work_a(m, n);  // gesvdj overwrites its input
    copy(work_a.view(), a);
    u = Matrix(m, k);
    s = Matrix(1, k);
    vt = Matrix(k, n);
    if (k == 0) return;
    // Row-major a is the column-major (n x m) matrix a^T = U' diag(s) V'^T, so
    // a = V' diag(s) U'^T: U' (n x k, column-major) is vt as stored, and V'
    // (m x k, column-major) is u transposed.
    const detail::cuda::DeviceBuffer<float> v_prime(static_cast<std::size_t>(m * k));
    const auto nc = static_cast<int>(n), mc = static_cast<int>(m), kc = static_cast<int>(k);
    cusolverDnHandle_t solver = detail::cuda::thread_context().solver();
    const JacobiParams params;
    int work_size = 0;
    PLORA_CUDA_CHECK(cusolverDnSgesvdj_bufferSize(solver, CUSOLVER_EIG_MODE_VECTOR, 1, nc, mc, work_a.data(), nc,
                                                  s.data(), vt.data(), nc, v_prime.data(), mc, &work_size,
                                                  params.info));
    const detail::cuda::DeviceBuffer<float> work(static_cast<std::size_t>(std::max(work_size, 1)));
    const detail::cuda::DeviceBuffer<int> info(1);
    PLORA_CUDA_CHECK(cusolverDnSgesvdj(solver, CUSOLVER_EIG_MODE_VECTOR, 1, nc, mc, work_a.data(), nc, s.data(),
                                       vt.data(), nc, v_prime.data(), mc, work.data(), work_size, info.data(),
                                       params.info));
    int host_info = 0;
    PLORA_CUDA_CHECK(cudaMemcpyAsync(&host_info, info.data(), sizeof(int), cudaMemcpyDeviceToHost, stream()));
    synchronize();
    check<ValueError>(host_info >= 0, "cuda::svd: cusolverDnSgesvdj rejected argument ", -host_info);
    check<NumericError>(host_info == 0, "cuda::svd: the Jacobi SVD of a ", m, " x ", n,
                        " matrix did not converge (is it finite?)");
    const float one = 1.0f, zero = 0.0f;
    // u (m x k row-major) is the column-major (k x m) matrix V'^T.
    PLORA_CUDA_CHECK(cublasSgeam(detail::cuda::thread_context().blas(), CUBLAS_OP_T, CUBLAS_OP_N, kc, mc, &one,
                                 v_prime.data(), mc, &zero, u.data(), kc, u.data(), kc));
  }

 private:
  static constexpr float kInvSqrt2 = 0.70710678118654752f;

  static std::atomic<MathMode>& math_mode_setting() {
    static std::atomic<MathMode> mode{MathMode::Fp32};
    return mode;
  }

  /// Owns cuSOLVER's Jacobi settings (default tolerance and sweep limit).
  struct JacobiParams {
    JacobiParams() { PLORA_CUDA_CHECK(cusolverDnCreateGesvdjInfo(&info)); }
    JacobiParams(const JacobiParams&) = delete;
    JacobiParams& operator=(const JacobiParams&) = delete;
    ~JacobiParams() { static_cast<void>(cusolverDnDestroyGesvdjInfo(info)); }
    gesvdjInfo_t info = nullptr;
  };

  static void require_int(Index value, const char* what) {
    check<ValueError>(value <= INT_MAX, what, " ", value, " exceeds the 32-bit range of cuBLAS / cuSOLVER");
  }

  template <class Dst, class Src>
  static void copy_2d(Dst* dst, Index dst_ld, Src* src, Index src_ld, Index rows, Index cols, cudaMemcpyKind kind) {
    if (rows == 0 || cols == 0) return;
    PLORA_CUDA_CHECK(cudaMemcpy2DAsync(dst, static_cast<std::size_t>(dst_ld) * sizeof(float), src,
                                       static_cast<std::size_t>(src_ld) * sizeof(float),
                                       static_cast<std::size_t>(cols) * sizeof(float), static_cast<std::size_t>(rows),
                                       kind, stream()));
  }

  static cublasComputeType_t compute_type() {
    switch (math_mode()) {
      case MathMode::Tf32: return CUBLAS_COMPUTE_32F_FAST_TF32;
      case MathMode::Bf16: return CUBLAS_COMPUTE_32F_FAST_16BF;
      case MathMode::Fp32: break;
    }
    return CUBLAS_COMPUTE_32F;
  }

  static Index op_rows(ConstView<Device> v, Op op) { return op == Op::N ? v.rows : v.cols; }
  static Index op_cols(ConstView<Device> v, Op op) { return op == Op::N ? v.cols : v.rows; }

  /// cuBLAS is column-major: the row-major c = op(a) op(b) is computed as the
  /// column-major c^T = op(b)^T op(a)^T, i.e. with the operands swapped and the
  /// same transpose flags.
  static void gemm_batched(View<Device> c, ConstView<Device> a, Op op_a, ConstView<Device> b, Op op_b, float alpha,
                           float beta, Index batch, Index stride_c, Index stride_a, Index stride_b, const char* what) {
    check<ShapeError>(op_rows(a, op_a) == c.rows && op_cols(b, op_b) == c.cols && op_cols(a, op_a) == op_rows(b, op_b),
                      what, ": op(a) is ", op_rows(a, op_a), " x ", op_cols(a, op_a), ", op(b) is ", op_rows(b, op_b),
                      " x ", op_cols(b, op_b), ", c is ", c.rows, " x ", c.cols);
    // After the shape check: cpu:: validates an empty batch too.
    if (c.empty() || batch <= 0) return;
    const Index k = op_cols(a, op_a);
    if (k == 0) {  // no products: c = beta * c, as cpu:: does
      for (Index i = 0; i < batch; ++i) {
        const View<Device> ci{c.data + i * stride_c, c.rows, c.cols, c.ld};
        if (beta == 0.0f) {
          fill(ci, 0.0f);
        } else if (beta != 1.0f) {
          scale(ci, beta);
        }
      }
      return;
    }
    require_int(std::max({c.rows, c.cols, k, a.ld, b.ld, c.ld, batch}), what);
    const auto blas_op = [](Op op) { return op == Op::N ? CUBLAS_OP_N : CUBLAS_OP_T; };
    PLORA_CUDA_CHECK(cublasGemmStridedBatchedEx(
        detail::cuda::thread_context().blas(), blas_op(op_b), blas_op(op_a), static_cast<int>(c.cols),
        static_cast<int>(c.rows), static_cast<int>(k), &alpha, b.data, CUDA_R_32F, static_cast<int>(b.ld), stride_b,
        a.data, CUDA_R_32F, static_cast<int>(a.ld), stride_a, &beta, c.data, CUDA_R_32F, static_cast<int>(c.ld),
        stride_c, static_cast<int>(batch), compute_type(), CUBLAS_GEMM_DEFAULT));
  }

  static void check_indices(const Indices& idx, Index expected_count, Index bound, const char* what) {
    check<ShapeError>(idx.size() == expected_count, what, ": ", idx.size(), " indices for ", expected_count, " slots");
    for (const std::int32_t i : idx.host())
      check<ShapeError>(i >= 0 && i < bound, what, ": index ", i, " is outside [0, ", bound, ")");
  }
  static void check_periodic_table(const Indices& table, Index period, Index cols, Index bound, const char* what) {
    const Index size = table.size();
    // By division: period * cols must not wrap.
    check<ShapeError>(period > 0 && (cols == 0 ? size == 0 : size % cols == 0 && size / cols == period), what, ": ",
                      size, " indices are not ", period, " lists of ", cols);
    check_indices(table, size, bound, what);
  }
};

static_assert(Backend<cuda>, "plora::cuda must satisfy the Backend concept");

}  // namespace plora
