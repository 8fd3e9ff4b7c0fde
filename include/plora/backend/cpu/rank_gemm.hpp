#pragma once
// Host GEMMs with one extent of at most kRankMax (a LoRA rank), without packing.
//
// A BLAS first copies both operands into cache-sized panels. For a rank-8
// product of a (tokens x 768) activation that copy is a full pass over the
// activation, while the product adds only 8 multiply-adds per element: perf
// of a dense LoRA forward + backward through OpenBLAS puts 46 % of its time
// in the copies. These kernels read the long operands once, in their stored
// row-major layout, and keep the rank-sized side in registers or L1:
//
//   rank_k    k <= kRankMax: row t of c = sum over p of op(a)(t, p) * row p of op(b)
//             (a LoRA forward's y += down B^T, the merge B A)
//   rank_n    n <= kRankMax, op(a) = a: c(t, j) = row t of a . column j of op(b)
//             (down = x A^T, d_down = dy B)
//   rank_sum  op(a) = a^T, op(b) = b, m or n <= kRankMax: c = sum over rows t
//             of (row t of a)^T (row t of b)  (dA = d_down^T x, dB = dy^T down)
//
// One thread computes each element of c, in an order fixed by the shapes, so
// results do not depend on the thread count. Vectors are Eigen's packets of
// the compiled ISA (AVX-512, AVX2 or SSE), multiply-adds fused where it has FMA.
#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cstdint>

#include "plora/backend/concepts.hpp"
#include "plora/backend/cpu/parallel.hpp"
#include "plora/core/host_matrix.hpp"

namespace plora::detail::cpu::rank_gemm {

/// The largest rank extent these kernels take; wider GEMMs go to the BLAS.
inline constexpr Index kRankMax = 16;

using Packet = Eigen::internal::packet_traits<float>::type;
inline constexpr Index kLanes = static_cast<Index>(sizeof(Packet) / sizeof(float));

inline Packet load(const float* p) { return Eigen::internal::ploadu<Packet>(p); }
inline void store(float* p, Packet v) { Eigen::internal::pstoreu(p, v); }
inline Packet splat(float x) { return Eigen::internal::pset1<Packet>(x); }
inline Packet multiply_add(Packet a, Packet b, Packet c) { return Eigen::internal::pmadd(a, b, c); }
/// Hints the line `floats` past p into the cache. The address is formed as an
/// integer: it may lie past the matrix (a prefetch never faults), and pointer
/// arithmetic out of bounds would be undefined.
inline void prefetch(const float* p, Index floats) {
  const auto address = reinterpret_cast<std::uintptr_t>(p) + static_cast<std::uintptr_t>(floats) * sizeof(float);
  __builtin_prefetch(reinterpret_cast<const void*>(address));
}

/// How a tile reads and writes its packets: whole, or (FirstLanes) only the
/// first n < kLanes floats, for a row's last, partial packet.
struct AllLanes {
  [[nodiscard]] Packet load(const float* p) const { return rank_gemm::load(p); }
  void store(float* p, Packet v) const { rank_gemm::store(p, v); }
};
#ifdef __AVX512F__
/// AVX-512 masks a row's last packet: a tile over it runs the packet
/// arithmetic of the others instead of a scalar loop per remaining float.
/// At Partial's compact widths (277 x 292 at 768 x 768, density 0.13) that
/// made a LoRA's forward + backward 1.3x faster on Zen 5 (docs/benchmarks.md
/// §13). Masked lanes are neither read nor written. AVX2 and SSE keep the
/// scalar loops: their masked stores are slow on AMD cores.
#define PLORA_RANK_MASKED_TAILS 1
struct FirstLanes {
  explicit FirstLanes(Index n) : mask(static_cast<std::uint16_t>((1u << n) - 1u)) {}
  [[nodiscard]] Packet load(const float* p) const { return Eigen::internal::ploadu<Packet>(p, mask); }
  void store(float* p, Packet v) const { Eigen::internal::pstoreu(p, v, mask); }
  std::uint16_t mask;
};
#endif

/// beta * c, reading c only when beta != 0 (stale NaNs under beta = 0 stay unread).
template <class Lanes = AllLanes>
Packet scaled(const float* c, float beta, Lanes lanes = {}) {
  if (beta == 0.0f) return splat(0.0f);
  return beta == 1.0f ? lanes.load(c) : Eigen::internal::pmul(splat(beta), lanes.load(c));
}
inline float scaled(float c, float beta) { return beta == 0.0f ? 0.0f : beta * c; }

/// The caller thread's scratch buffers (slot 0: a rank operand transposed or
/// realigned, or an accumulator; slot 1: scaled weights), kept between calls:
/// no allocation per step. Cache-line aligned like every HostMatrix, so a
/// packet of a row whose length is a multiple of 16 never straddles two lines.
template <int Slot>
float* scratch(Index floats) {
  thread_local HostMatrix::Values buffer;
  if (static_cast<Index>(buffer.size()) < floats) buffer.resize(static_cast<std::size_t>(floats));
  return buffer.data();
}

/// The rank-sized operand as rows: row p at data + p * ld, every row
/// starting on a packet boundary. It is read once per tile of every token
/// row, so a row that straddled cache lines would split every load of it:
/// Partial's compact factors (292 kept columns) are not packet multiples.
struct RankRows {
  const float* data;
  Index ld;
};
inline Index packet_multiple(Index n) { return (n + kLanes - 1) / kLanes * kLanes; }

/// src as rows: itself when its rows start on packet boundaries, else a copy
/// with the leading dimension rounded up to whole packets.
inline RankRows aligned_rows(ConstHostView src) {
  if (src.ld % kLanes == 0 && reinterpret_cast<std::uintptr_t>(src.data) % sizeof(Packet) == 0)
    return {src.data, src.ld};
  const Index ld = packet_multiple(src.cols);
  float* out = scratch<0>(src.rows * ld);
  for (Index r = 0; r < src.rows; ++r) std::copy_n(src.data + r * src.ld, src.cols, out + r * ld);
  return {out, ld};
}
/// src (rows x cols)^T as rows, the leading dimension rounded up to whole packets.
inline RankRows transposed(ConstHostView src) {
  const Index ld = packet_multiple(src.rows);
  float* out = scratch<0>(src.cols * ld);
  for (Index r = 0; r < src.rows; ++r)
    for (Index c = 0; c < src.cols; ++c) out[c * ld + r] = src.data[r * src.ld + c];
  return {out, ld};
}

/// Rows [t, t + R) of c, columns [j, j + P packets): c = beta c + sum over p
/// of w(row, p) * row p of b_rows. R x P accumulators stay in registers and
/// each packet of b_rows loaded serves R rows.
template <int R, int P, class Lanes = AllLanes>
void rank_k_tile(float* c, Index ld_c, const float* w, const float* b_rows, Index ld_b, Index k, Index j, float beta,
                 Lanes lanes = {}) {
  Packet acc[R][P];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < P; ++q) acc[r][q] = scaled(c + r * ld_c + j + q * kLanes, beta, lanes);
  for (Index p = 0; p < k; ++p) {
    Packet row[P];
    for (int q = 0; q < P; ++q) row[q] = lanes.load(b_rows + p * ld_b + j + q * kLanes);
    for (int r = 0; r < R; ++r) {
      const Packet wr = splat(w[r * kRankMax + p]);
      for (int q = 0; q < P; ++q) acc[r][q] = multiply_add(wr, row[q], acc[r][q]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < P; ++q) lanes.store(c + r * ld_c + j + q * kLanes, acc[r][q]);
}

/// R rows of c from row t: every column, by tiles of four packets, then one,
/// then a masked packet or scalars.
template <int R>
void rank_k_rows(HostView c, ConstHostView a, Op op_a, const float* b_rows, Index ld_b, Index k, Index t, float alpha,
                 float beta) {
  std::array<float, R * kRankMax> w{};  // alpha op(a)(t + r, p) at w[r * kRankMax + p]
  for (int r = 0; r < R; ++r)
    for (Index p = 0; p < k; ++p)
      w[r * kRankMax + p] = alpha * (op_a == Op::N ? a.data[(t + r) * a.ld + p] : a.data[p * a.ld + t + r]);
  float* rows = c.data + t * c.ld;
  Index j = 0;
  for (; j + 4 * kLanes <= c.cols; j += 4 * kLanes) rank_k_tile<R, 4>(rows, c.ld, w.data(), b_rows, ld_b, k, j, beta);
  for (; j + kLanes <= c.cols; j += kLanes) rank_k_tile<R, 1>(rows, c.ld, w.data(), b_rows, ld_b, k, j, beta);
#ifdef PLORA_RANK_MASKED_TAILS
  if (j < c.cols) rank_k_tile<R, 1>(rows, c.ld, w.data(), b_rows, ld_b, k, j, beta, FirstLanes(c.cols - j));
#else
  for (; j < c.cols; ++j)
    for (int r = 0; r < R; ++r) {
      float sum = scaled(rows[r * c.ld + j], beta);
      for (Index p = 0; p < k; ++p) sum += w[r * kRankMax + p] * b_rows[p * ld_b + j];
      rows[r * c.ld + j] = sum;
    }
#endif
}

/// c (m x n) = beta c + alpha op(a) (m x k) b_rows (k x n, row p at b_rows + p * ld_b); k <= kRankMax.
inline void rank_k(HostView c, ConstHostView a, Op op_a, const float* b_rows, Index ld_b, float alpha, float beta) {
  const Index k = op_a == Op::N ? a.cols : a.rows;
  constexpr Index kRows = 4;  // 4 rows x 4 packets: 16 accumulators
  const Index groups = c.rows / kRows;
  parallel_rows(groups, kRows * c.cols, [&](Index g) {
    rank_k_rows<kRows>(c, a, op_a, b_rows, ld_b, k, g * kRows, alpha, beta);
  });
  for (Index t = groups * kRows; t < c.rows; ++t) rank_k_rows<1>(c, a, op_a, b_rows, ld_b, k, t, alpha, beta);
}

/// out[r * kRankMax + g] = row r of x (at x + r * ld_x) . row g of b_cols, for
/// R rows of x and G rows of b_cols: R x G accumulators, each packet loaded
/// serving R or G of them.
template <int R, int G>
void dot_tile(const float* x, Index ld_x, Index k, const float* b_cols, Index ld_b, float* out) {
  Packet acc[R][G];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) acc[r][g] = splat(0.0f);
  // acc[r][g] += packet p of row r of x times packet p of row g of b_cols
  const auto step = [&](Index p, auto lanes) {
    Packet xv[R];
    for (int r = 0; r < R; ++r) xv[r] = lanes.load(x + r * ld_x + p);
    for (int g = 0; g < G; ++g) {
      const Packet bv = lanes.load(b_cols + g * ld_b + p);
      for (int r = 0; r < R; ++r) acc[r][g] = multiply_add(xv[r], bv, acc[r][g]);
    }
  };
  Index p = 0;
  for (; p + kLanes <= k; p += kLanes) {
    for (int r = 0; r < R; ++r) prefetch(x, (r + R) * ld_x + p);  // the next rows' line: one line per packet
    step(p, AllLanes{});
  }
#ifdef PLORA_RANK_MASKED_TAILS
  if (p < k) {  // the last, partial packet: masked lanes load as zeros
    step(p, FirstLanes(k - p));
    p = k;
  }
#endif
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) {
      float sum = Eigen::internal::predux(acc[r][g]);
      for (Index q = p; q < k; ++q) sum += x[r * ld_x + q] * b_cols[g * ld_b + q];
      out[r * kRankMax + g] = sum;
    }
}

/// R rows of c from row t: the dot products in groups of eight, four, one columns.
template <int R>
void rank_n_rows(HostView c, ConstHostView a, const float* b_cols, Index ld_b, Index t, float alpha, float beta) {
  const Index k = a.cols, n = c.cols;
  const float* x = a.data + t * a.ld;
  std::array<float, R * kRankMax> dots{};
  Index j = 0;
  for (; j + 8 <= n; j += 8) dot_tile<R, 8>(x, a.ld, k, b_cols + j * ld_b, ld_b, dots.data() + j);
  for (; j + 4 <= n; j += 4) dot_tile<R, 4>(x, a.ld, k, b_cols + j * ld_b, ld_b, dots.data() + j);
  for (; j < n; ++j) dot_tile<R, 1>(x, a.ld, k, b_cols + j * ld_b, ld_b, dots.data() + j);
  for (int r = 0; r < R; ++r) {
    float* row = c.data + (t + r) * c.ld;
    for (j = 0; j < n; ++j) row[j] = alpha * dots[r * kRankMax + j] + scaled(row[j], beta);
  }
}

/// c (m x n) = beta c + alpha a (m x k) b_cols^T, column j of the product's
/// right factor stored as a row at b_cols + j * ld_b; n <= kRankMax.
inline void rank_n(HostView c, ConstHostView a, const float* b_cols, Index ld_b, float alpha, float beta) {
  constexpr Index kRows = 2;  // 2 rows x 8 columns: 16 accumulators
  const Index groups = c.rows / kRows;
  parallel_rows(groups, kRows * a.cols, [&](Index g) {
    rank_n_rows<kRows>(c, a, b_cols, ld_b, g * kRows, alpha, beta);
  });
  for (Index t = groups * kRows; t < c.rows; ++t) rank_n_rows<1>(c, a, b_cols, ld_b, t, alpha, beta);
}

/// out rows [i, i + G), columns [j, j + P packets) += sum over rows t in
/// [t0, t1) of weights(t, i + g) * row t of wide: G x P accumulators in registers.
template <int G, int P, class Lanes = AllLanes>
void outer_tile(float* out, Index ld_out, const float* weights, Index ld_w, const float* wide, Index ld_wide, Index i,
                Index j, Index t0, Index t1, Lanes lanes = {}) {
  Packet acc[G][P];
  for (int g = 0; g < G; ++g)
    for (int q = 0; q < P; ++q) acc[g][q] = lanes.load(out + (i + g) * ld_out + j + q * kLanes);
  for (Index t = t0; t < t1; ++t) {
    Packet row[P];
    for (int q = 0; q < P; ++q) {
      prefetch(wide, (t + 8) * ld_wide + j + q * kLanes);  // eight rows ahead: a strided walk
      row[q] = lanes.load(wide + t * ld_wide + j + q * kLanes);
    }
    for (int g = 0; g < G; ++g) {
      const Packet w = splat(weights[t * ld_w + i + g]);
      for (int q = 0; q < P; ++q) acc[g][q] = multiply_add(w, row[q], acc[g][q]);
    }
  }
  for (int g = 0; g < G; ++g)
    for (int q = 0; q < P; ++q) lanes.store(out + (i + g) * ld_out + j + q * kLanes, acc[g][q]);
}

/// Rows [i, i + G) of out over the columns [first, last), tokens [t0, t1):
/// tiles of two packets, then one, then a masked packet or scalars.
template <int G>
void outer_rows(float* out, Index ld_out, const float* weights, Index ld_w, ConstHostView wide, Index i, Index first,
                Index last, Index t0, Index t1) {
  Index j = first;
  for (; j + 2 * kLanes <= last; j += 2 * kLanes)
    outer_tile<G, 2>(out, ld_out, weights, ld_w, wide.data, wide.ld, i, j, t0, t1);
  for (; j + kLanes <= last; j += kLanes) outer_tile<G, 1>(out, ld_out, weights, ld_w, wide.data, wide.ld, i, j, t0, t1);
#ifdef PLORA_RANK_MASKED_TAILS
  if (j < last) outer_tile<G, 1>(out, ld_out, weights, ld_w, wide.data, wide.ld, i, j, t0, t1, FirstLanes(last - j));
#else
  for (; j < last; ++j)
    for (int g = 0; g < G; ++g) {
      float sum = out[(i + g) * ld_out + j];
      for (Index t = t0; t < t1; ++t) sum += weights[t * ld_w + i + g] * wide.data[t * wide.ld + j];
      out[(i + g) * ld_out + j] = sum;
    }
#endif
}

/// out (width x wide columns, ld ld_out) += weights (k x width)^T wide (k x
/// wide columns), over the columns [first, last) only: the columns are
/// independent, so threads take disjoint ranges. Tokens go in blocks whose
/// rows of wide stay in L2 while the column tiles sweep over them.
inline void outer_sum(float* out, Index ld_out, ConstHostView weights, ConstHostView wide, Index first, Index last) {
  constexpr Index kTokenBlock = 64;
  for (Index t0 = 0; t0 < wide.rows; t0 += kTokenBlock) {
    const Index t1 = std::min(wide.rows, t0 + kTokenBlock);
    Index i = 0;
    for (; i + 8 <= weights.cols; i += 8) outer_rows<8>(out, ld_out, weights.data, weights.ld, wide, i, first, last, t0, t1);
    for (; i + 4 <= weights.cols; i += 4) outer_rows<4>(out, ld_out, weights.data, weights.ld, wide, i, first, last, t0, t1);
    for (; i < weights.cols; ++i) outer_rows<1>(out, ld_out, weights.data, weights.ld, wide, i, first, last, t0, t1);
  }
}

/// c = beta c + alpha a^T b for a (k x m), b (k x n), with m or n <= kRankMax.
inline void rank_sum(HostView c, ConstHostView a, ConstHostView b, float alpha, float beta) {
  const bool rank_rows = c.rows <= kRankMax;  // else c.cols <= kRankMax: accumulate c^T
  const ConstHostView weights = rank_rows ? a : b, wide = rank_rows ? b : a;
  const Index width = weights.cols, columns = wide.cols;
  // Rank rows: c itself, pre-scaled by beta, is the accumulator. Else c^T
  // (width x columns) accumulates in scratch and is written back transposed.
  float* out = rank_rows ? c.data : scratch<0>(width * columns);
  const Index ld_out = rank_rows ? c.ld : columns;
  // alpha goes into a copy of the (k x width) weights, so the sums need no final scaling.
  float* alpha_weights = scratch<1>(weights.rows * width);
  for (Index t = 0; t < weights.rows; ++t)
    for (Index i = 0; i < width; ++i) alpha_weights[t * width + i] = alpha * weights.data[t * weights.ld + i];
  const ConstHostView w{alpha_weights, weights.rows, width, width};
  constexpr Index kBlock = 256;  // columns per task: a 1 KiB piece of each row of wide, a few tasks
  const Index blocks = (columns + kBlock - 1) / kBlock;
  const auto column_block = [&](Index block) {
    const Index first = block * kBlock, last = std::min(columns, first + kBlock);
    for (Index i = 0; i < width; ++i)
      for (Index j = first; j < last; ++j) {
        float& v = out[i * ld_out + j];
        v = rank_rows ? scaled(v, beta) : 0.0f;
      }
    outer_sum(out, ld_out, w, wide, first, last);
    if (!rank_rows)
      for (Index j = first; j < last; ++j)
        for (Index i = 0; i < width; ++i) c.data[j * c.ld + i] = out[i * ld_out + j] + scaled(c.data[j * c.ld + i], beta);
  };
  parallel_rows(blocks, wide.rows * kBlock, column_block);
}

/// c = alpha op(a) op(b) + beta c through the kernel for its rank extent;
/// false (c untouched) when no extent is a rank, the layout has no kernel, or
/// the long side (the rows the kernel streams: rows of c, or k for rank_sum)
/// has fewer than `min_rows`. Shapes are the caller's to check; c, a and b are non-empty.
inline bool gemm(HostView c, ConstHostView a, Op op_a, ConstHostView b, Op op_b, float alpha, float beta,
                 Index min_rows) {
  const Index k = op_a == Op::N ? a.cols : a.rows;
  if (k <= kRankMax && c.rows >= min_rows) {
    // Rows of op(b): b's rows, or rows of its (n x k -> k x n) transpose.
    const RankRows rows = op_b == Op::N ? aligned_rows(b) : transposed(b);
    rank_k(c, a, op_a, rows.data, rows.ld, alpha, beta);
    return true;
  }
  if (c.cols <= kRankMax && op_a == Op::N && c.rows >= min_rows) {
    // Columns of op(b) as rows: b's rows, or rows of its transpose.
    const RankRows columns = op_b == Op::T ? aligned_rows(b) : transposed(b);
    rank_n(c, a, columns.data, columns.ld, alpha, beta);
    return true;
  }
  if ((c.rows <= kRankMax || c.cols <= kRankMax) && op_a == Op::T && op_b == Op::N && k >= min_rows) {
    rank_sum(c, a, b, alpha, beta);
    return true;
  }
  return false;
}

}  // namespace plora::detail::cpu::rank_gemm
