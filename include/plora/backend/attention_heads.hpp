#pragma once
// Multi-head attention's layout, shared by the backends' fused attention ops
// and nn/attention.hpp: head h of sequence n is the column block
// [h d, (h + 1) d) of the sequence's rows in the activations (queries,
// contexts: `queries` rows per sequence; keys, values: `tokens` rows), and
// the (queries x tokens) block at row (n heads + h) queries of the scores.
// Each is a strided view, so the per-head products are batched GEMMs on
// views, no copies.
#include <string>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/core/host_matrix.hpp"
#include "plora/core/view.hpp"

namespace plora::detail {

/// `batch` sequences of `tokens` keys and `queries` query rows, `heads`
/// heads of `head_dim` columns.
struct AttentionShape {
  Index batch, heads, head_dim, queries, tokens;
};

/// The shape of B::attention(probs, context, q, k, v, mask, heads, ...):
/// q, context (batch queries, heads d); k, v (batch tokens, heads d); probs
/// (batch heads queries, tokens); mask empty or (batch, tokens). ShapeError
/// naming `who` otherwise.
template <class Space>
AttentionShape attention_shape(ConstView<Space> probs, ConstView<Space> context, ConstView<Space> q,
                               ConstView<Space> k, ConstView<Space> v, ConstView<Space> mask, Index heads,
                               const char* who) {
  const Index tokens = probs.cols;
  check<ShapeError>(heads > 0 && q.cols % heads == 0 && tokens > 0 && k.rows % tokens == 0 && k.rows > 0, who, ": ",
                    heads, " heads of ", q.cols, " columns, ", k.rows, " key rows in sequences of ", tokens);
  const Index batch = k.rows / tokens;
  check<ShapeError>(q.rows % batch == 0 && q.rows > 0, who, ": ", q.rows, " query rows for ", batch, " sequences");
  const AttentionShape s{batch, heads, q.cols / heads, q.rows / batch, tokens};
  const std::string name(who);
  require_shape(k, batch * tokens, q.cols, name + " k");
  require_shape(v, batch * tokens, q.cols, name + " v");
  require_shape(context, q.rows, q.cols, name + " context");
  require_shape(probs, batch * heads * s.queries, tokens, name + " probs");
  if (!mask.empty()) require_shape(mask, batch, tokens, name + " mask");
  return s;
}

/// The shape of B::attention_backward(d_query, d_key, d_value, d_scores,
/// d_context, probs, q, k, v, heads, ...): the forward's shape, with each
/// gradient shaped like its value and d_scores like probs.
template <class Space>
AttentionShape attention_backward_shape(ConstView<Space> d_query, ConstView<Space> d_key, ConstView<Space> d_value,
                                        ConstView<Space> d_scores, ConstView<Space> d_context,
                                        ConstView<Space> probs, ConstView<Space> q, ConstView<Space> k,
                                        ConstView<Space> v, Index heads, const char* who) {
  const AttentionShape s = attention_shape<Space>(probs, d_context, q, k, v, {}, heads, who);
  const std::string name(who);
  require_shape(d_scores, probs.rows, probs.cols, name + " d_scores");
  require_shape(d_query, q.rows, q.cols, name + " d_query");
  require_shape(d_key, k.rows, k.cols, name + " d_key");
  require_shape(d_value, v.rows, v.cols, name + " d_value");
  return s;
}

/// One operand of the per-(sequence, head) products: the block of (0, 0)
/// and the element offsets to the next sequence's block and the next head's.
template <class T, class Space>
struct HeadBlocks {
  MatrixView<T, Space> first;
  Index sequence_stride;
  Index head_stride;
};
/// Activations with `rows` rows per sequence (queries or tokens).
template <class T, class Space>
HeadBlocks<T, Space> activation_heads(MatrixView<T, Space> m, Index rows, Index head_dim) {
  return {m.block(0, 0, rows, head_dim), rows * m.ld, head_dim};
}
/// Scores or probabilities (batch heads queries, tokens).
template <class T, class Space>
HeadBlocks<T, Space> score_heads(MatrixView<T, Space> m, Index heads, Index queries) {
  return {m.block(0, 0, queries, m.cols), heads * queries * m.ld, queries * m.ld};
}

/// c_(n,h) = alpha op(a_(n,h)) op(b_(n,h)) + beta c_(n,h) for every sequence
/// n < batch and head h < heads: one strided-batched GEMM per head over the
/// sequences, or per sequence over the heads, whichever makes fewer calls.
/// (a and b may be blocks of mutable or const views.)
template <class B, class OperandA, class OperandB>
void per_head_gemm(HeadBlocks<float, typename B::Space> c, OperandA a, Op op_a, OperandB b, Op op_b, float alpha,
                   float beta, Index batch, Index heads) {
  const bool over_sequences = batch >= heads;
  const Index calls = over_sequences ? heads : batch, count = over_sequences ? batch : heads;
  const auto at = [&](const auto& x, Index call) {
    const Index offset = call * (over_sequences ? x.head_stride : x.sequence_stride);
    return decltype(x.first){x.first.data + offset, x.first.rows, x.first.cols, x.first.ld};
  };
  const auto step = [&](const auto& x) { return over_sequences ? x.sequence_stride : x.head_stride; };
  for (Index i = 0; i < calls; ++i)
    B::gemm_strided_batched(at(c, i), at(a, i), op_a, at(b, i), op_b, alpha, beta, count, step(c), step(a), step(b));
}

}  // namespace plora::detail
