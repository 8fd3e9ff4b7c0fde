#pragma once
// Multi-head softmax self-attention with separate query / key / value sites and
// an output dense site (BERT / ViT layout):
//   Q, K, V = x Wq^T + bq, ...                          (rows, hidden), rows = batch * tokens
//   P_(n,h) = softmax(Q_(n,h) K_(n,h)^T / sqrt(d) + mask_n)   (tokens, tokens) per image n, head h
//   out     = concat_h(dropout(P_(n,h)) V_(n,h)) Wo^T + bo   (dropout in training only)
// Head h of image n is the column block [h d, (h + 1) d) of rows [n T, (n + 1) T)
// (backend/attention_heads.hpp): a strided view, so the per-head products are
// batched GEMMs on views, no copies. Without dropout on P, the forward's
// scores, softmax and P V are one backend op (B::attention), and so is their
// backward (B::attention_backward); the CPU runs them per (image, head) with
// that pair's scores in cache.
// A forward may compute the queries of each sequence's first token only (a
// classifier on token 0 reads nothing else): Q and P shrink to one row per
// (image, head) while K and V still come from every token.
#include <cmath>
#include <string>
#include <utility>

#include "plora/backend/attention_heads.hpp"
#include "plora/backend/scratch.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/nn/backward_scratch.hpp"
#include "plora/nn/dropout.hpp"
#include "plora/nn/linear_site.hpp"

namespace plora {

/// Which tokens' outputs an attention forward computes.
enum class Queries { every_token, first_token };
/// Rows between consecutive computed queries in a stream of `tokens`-token
/// sequences: 1, or one sequence for its first token alone.
inline Index query_step(Queries queries, Index tokens) { return queries == Queries::first_token ? tokens : 1; }

/// @tparam B  backend
/// @tparam A  adapter type the four sites may carry
template <Backend B, Adapter A>
class SelfAttention {
 public:
  using Site = LinearSite<B, A>;
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  SelfAttention() = default;
  /// query, key, value: (hidden x in); output: (out x hidden); hidden divisible
  /// by heads. probability_dropout: on P in training (attention_probs_dropout_prob).
  SelfAttention(Site query, Site key, Site value, Site output, Index heads, float probability_dropout = 0.0f)
      : query_(std::move(query)), key_(std::move(key)), value_(std::move(value)), output_(std::move(output)),
        heads_(heads), probability_dropout_(probability_dropout) {
    const Index hidden = query_.out_features();
    check<ValueError>(heads_ > 0 && hidden % heads_ == 0, query_.name(), ": ", hidden,
                      " output features do not split into ", heads_, " heads");
    for (const Site* s : {&key_, &value_})
      check<ShapeError>(s->out_features() == hidden && s->in_features() == query_.in_features(), s->name(),
                        ": expected shape ", hidden, " x ", query_.in_features(), " like ", query_.name(), ", got ",
                        s->out_features(), " x ", s->in_features());
    check<ShapeError>(output_.in_features() == hidden, output_.name(), ": expected ", hidden,
                      " input features (the attention width), got ", output_.in_features());
  }

  [[nodiscard]] Site& query() { return query_; }
  [[nodiscard]] Site& key() { return key_; }
  [[nodiscard]] Site& value() { return value_; }
  [[nodiscard]] Site& output() { return output_; }
  [[nodiscard]] Index heads() const { return heads_; }
  [[nodiscard]] Index head_dim() const { return query_.out_features() / heads_; }
  /// The attention probabilities of the last forward, (batch * heads * query
  /// tokens, tokens), rows ordered (image, head, query token).
  [[nodiscard]] ConstView probabilities() const { return probs_.rows(batch_ * heads_ * query_tokens_); }

  /// out from x (rows, in), rows = batch * tokens: (rows, out) for every
  /// token's queries, (batch, out) for the first token's. `mask` is empty or
  /// (batch x tokens) of additive key scores (0 to attend, a large negative
  /// value for padding), added to every head's scores of that image. With a
  /// `dropout` stream (training) P's dropout draws from it. A non-empty
  /// `residual` (like out) is added to out with the output site's bias.
  void forward(View out, ConstView x, Index tokens, ConstView mask = {}, RandomStream* dropout = nullptr,
               Queries queries = Queries::every_token, ConstView residual = {}) {
    check<ShapeError>(tokens > 0 && x.rows % tokens == 0, query_.name(), ": ", x.rows,
                      " input rows are not a whole number of ", tokens, "-token sequences");
    tokens_ = tokens;
    query_tokens_ = tokens / query_step(queries, tokens);
    batch_ = x.rows / tokens;
    check<ShapeError>(mask.empty() || (mask.rows == batch_ && mask.cols == tokens), query_.name(),
                      ": attention mask must be ", batch_, " x ", tokens, ", got ", mask.rows, " x ", mask.cols);
    const Index rows = x.rows, query_rows = batch_ * query_tokens_, hidden = query_.out_features();
    check<ShapeError>(out.rows == query_rows, query_.name(), ": output has ", out.rows, " rows, expected ",
                      query_rows, " (", query_tokens_, " query tokens of ", batch_, " sequences)");
    const View q = q_.rows(query_rows, hidden), k = k_.rows(rows, hidden), v = v_.rows(rows, hidden);
    query_.forward(q, query_rows_of(x), saved_query_);
    key_.forward(k, x, saved_key_);
    value_.forward(v, x, saved_value_);

    const View probs = probs_.rows(query_rows * heads_, tokens);
    const View context = context_.rows(query_rows, hidden);
    if (probability_dropout_.active(dropout)) {
      per_head(scores_of(probs), queries_of(cv(q)), Op::N, keys_of(cv(k)), Op::T, scale());  // Q K^T / sqrt(d)
      if (!mask.empty())
        for (Index n = 0; n < batch_; ++n)
          B::add_row_vector(probs.row_block(n * heads_ * query_tokens_, heads_ * query_tokens_), mask.row_block(n, 1));
      B::softmax_rows(probs);
      const ConstView weights = probability_dropout_.forward(probs, dropout);
      per_head(queries_of(context), scores_of(weights), Op::N, keys_of(cv(v)), Op::N, 1.0f);  // P V
    } else {  // the same in one backend op, which may keep each head's scores in cache
      B::attention(probs, context, q, k, v, mask, heads_, scale());
      (void)probability_dropout_.forward(probs, nullptr);  // records that nothing was dropped
    }
    output_.forward(out, context, saved_output_, residual);
  }

  /// dx (rows, in) from dout (as the forward's out) and the forward input x;
  /// site gradients accumulate. An empty dx skips the input gradient (site
  /// parameter grads are still filled).
  void backward(View dx, ConstView dout, ConstView x, BackwardScratch<B>& scratch) {
    const Index rows = x.rows, query_rows = batch_ * query_tokens_, hidden = query_.out_features();
    check<ShapeError>(rows == batch_ * tokens_, query_.name(), ": backward got ", rows,
                      " input rows but forward saw ", batch_ * tokens_);
    const ConstView probs = probs_.rows(query_rows * heads_);
    const View d_context = scratch.d_context.rows(query_rows, hidden);
    output_.backward(d_context, dout, context_.rows(query_rows), saved_output_);

    const View d_scores = scratch.d_scores.rows(query_rows * heads_, tokens_);
    const View d_value = scratch.d_value.rows(rows, hidden);
    const View d_query = scratch.d_query.rows(query_rows, hidden), d_key = scratch.d_key.rows(rows, hidden);
    if (probability_dropout_.applied()) {  // d_scores holds dP, then dS
      per_head(scores_of(d_scores), queries_of(cv(d_context)), Op::N, keys_of(v_.rows(rows)), Op::T, 1.0f);  // dC V^T
      per_head(keys_of(d_value), scores_of(probability_dropout_.output(probs)), Op::T, queries_of(cv(d_context)),
               Op::N, 1.0f);  // P^T dC
      probability_dropout_.backward(d_scores);
      B::softmax_rows_backward(d_scores, probs, d_scores);
      per_head(queries_of(d_query), scores_of(cv(d_scores)), Op::N, keys_of(k_.rows(rows)), Op::N, scale());  // dS K
      per_head(keys_of(d_key), scores_of(cv(d_scores)), Op::T, queries_of(q_.rows(query_rows)), Op::N,
               scale());  // dS^T Q
    } else {  // the same in one backend op, as in the forward
      B::attention_backward(d_query, d_key, d_value, d_scores, d_context, probs, q_.rows(query_rows), k_.rows(rows),
                            v_.rows(rows), heads_, scale());
    }

    // The three projections read the same x: their input gradients sum in dx
    // (the query's only on its rows when it saw the first tokens alone).
    key_.backward(dx, d_key, x, saved_key_);
    value_.backward(dx, d_value, x, saved_value_, Site::InputGrad::add);
    query_.backward(query_rows_of(dx), d_query, query_rows_of(x), saved_query_, Site::InputGrad::add);
  }

  /// Exchanges the forward state (not the weights) with another attention block.
  void swap_activations(SelfAttention& other) noexcept {
    std::swap(q_, other.q_);
    std::swap(k_, other.k_);
    std::swap(tokens_, other.tokens_);
    std::swap(query_tokens_, other.query_tokens_);
    std::swap(batch_, other.batch_);
    std::swap(v_, other.v_);
    std::swap(probs_, other.probs_);
    std::swap(context_, other.context_);
    std::swap(saved_query_, other.saved_query_);
    std::swap(saved_key_, other.saved_key_);
    std::swap(saved_value_, other.saved_value_);
    std::swap(saved_output_, other.saved_output_);
    probability_dropout_.swap_activations(other.probability_dropout_);
  }

 private:
  template <class T>
  using Blocks = detail::HeadBlocks<T, typename B::Space>;
  /// Q-side activations (queries, context): query_tokens_ rows per image.
  template <class T>
  [[nodiscard]] Blocks<T> queries_of(MatrixView<T, typename B::Space> m) const {
    return detail::activation_heads(m, query_tokens_, head_dim());
  }
  /// K-side activations (keys, values): every token's row.
  template <class T>
  [[nodiscard]] Blocks<T> keys_of(MatrixView<T, typename B::Space> m) const {
    return detail::activation_heads(m, tokens_, head_dim());
  }
  /// Scores (batch * heads * query_tokens_, tokens).
  template <class T>
  [[nodiscard]] Blocks<T> scores_of(MatrixView<T, typename B::Space> m) const {
    return detail::score_heads(m, heads_, query_tokens_);
  }
  /// The rows of an input-side matrix (rows, in) whose queries the forward computed.
  template <class T>
  [[nodiscard]] MatrixView<T, typename B::Space> query_rows_of(MatrixView<T, typename B::Space> m) const {
    return m.every_nth_row(tokens_ / query_tokens_);
  }
  /// c_(n,h) = alpha op(a_(n,h)) op(b_(n,h)) for every image n and head h:
  /// the training path with dropout on P.
  void per_head(Blocks<float> c, Blocks<const float> a, Op op_a, Blocks<const float> b, Op op_b, float alpha) const {
    detail::per_head_gemm<B>(c, a, op_a, b, op_b, alpha, 0.0f, batch_, heads_);
  }

  static ConstView cv(ConstView m) { return m; }
  [[nodiscard]] float scale() const { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim()))); }

  Site query_, key_, value_, output_;
  Index heads_ = 1;
  Index tokens_ = 0;        // of the last forward
  Index query_tokens_ = 0;  // per image whose queries it computed: tokens_ or 1
  Index batch_ = 0;
  detail::Scratch<B> q_, k_, v_;  // (query rows, hidden), (rows, hidden) twice
  detail::Scratch<B> probs_;      // (batch * heads * query tokens, tokens) softmax output
  CopyingDropout<B> probability_dropout_;  // dropout(P) multiplies V in training
  detail::Scratch<B> context_;    // (query rows, hidden) input of the output site
  typename Site::Saved saved_query_, saved_key_, saved_value_, saved_output_;
};

}  // namespace plora
