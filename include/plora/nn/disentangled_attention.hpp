#pragma once
// DeBERTa-v2/v3 disentangled self-attention (He et al., ICLR 2021; transformers'
// DisentangledSelfAttention, REFERENCE.md §2). Per image n and head h, with
// Q, K, V the content projections, Kr = key_proj(rel), Qr = query_proj(rel)
// (or pos_key_proj / pos_query_proj when share_att_key is false) and
// idx(a, b) = clamp(bucket(a - b) + span, 0, 2 span - 1):
//   c2p[i, j] = (Q Kr^T)[i, idx(i, j)]
//   p2c[i, j] = (K Qr^T)[j, clamp(span - bucket(j - i), 0, 2 span - 1)]
//   P = softmax((Q K^T + c2p + p2c) / sqrt(d (1 + #pos types)) + mask)
//   context = dropout(P) V
// In training, rel passes through its own dropout in every layer first
// (transformers' pos_dropout, at hidden_dropout_prob).
// Each gather is one call over all (image, head) blocks: a row's index list
// depends only on its position in the block (a periodic table). Only the rows
// of rel that the tables reach are projected and multiplied (for 128 tokens
// and 256 buckets, 255 of the 512): the others never reach a score. p2c is
// gathered transposed, as transformers does, and added through a block
// transpose. A forward may compute the queries of each sequence's first token
// only (Queries::first_token, as for SelfAttention): Q, the scores and c2p
// shrink to one row per (image, head), p2c to one column.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "plora/backend/attention_heads.hpp"
#include "plora/backend/scratch.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/nn/attention.hpp"
#include "plora/nn/backward_scratch.hpp"
#include "plora/nn/dropout.hpp"
#include "plora/nn/linear_site.hpp"

namespace plora {

/// transformers' make_log_bucket_position for one relative distance r = i - j:
/// exact within +-buckets/2, log-spaced beyond, in float32 as PyTorch computes
/// it. buckets <= 0 disables bucketing (r itself).
inline Index relative_position_bucket(Index r, Index buckets, Index max_position) {
  if (buckets <= 0 || max_position <= 0) return r;
  const Index mid = buckets / 2;
  const Index abs_pos = (r < mid && r > -mid) ? mid - 1 : (r < 0 ? -r : r);
  if (abs_pos <= mid) return r;
  // PyTorch: (abs_pos / mid) in float32; log((max_position - 1) / mid) of a
  // Python double rounded to float32; times (mid - 1); ceil; + mid.
  const float ratio = static_cast<float>(abs_pos) / static_cast<float>(mid);
  const float log_max = std::log(static_cast<float>(static_cast<double>(max_position - 1) / static_cast<double>(mid)));
  const float log_pos = std::ceil(std::log(ratio) / log_max * static_cast<float>(mid - 1)) + static_cast<float>(mid);
  return static_cast<Index>(log_pos) * (r > 0 ? 1 : -1);
}

/// The relative-position settings of one DeBERTa attention (from DebertaV2Config).
struct DisentangledOptions {
  Index heads = 12;
  bool relative_attention = true;
  bool c2p = true;
  bool p2c = true;
  Index position_buckets = 256;        ///< <= 0: no log buckets
  Index max_relative_positions = 512;  ///< already resolved (config value < 1 -> max_position_embeddings)
  float probability_dropout = 0.0f;    ///< on P in training (attention_probs_dropout_prob)
  float position_dropout = 0.0f;       ///< on rel in training (hidden_dropout_prob)
  /// Half the number of relative-embedding rows: buckets when > 0, else max_relative_positions.
  [[nodiscard]] Index span() const { return position_buckets > 0 ? position_buckets : max_relative_positions; }
  /// transformers counts pos_att_type in the scale even without relative attention.
  [[nodiscard]] Index scale_factor() const { return 1 + (c2p ? 1 : 0) + (p2c ? 1 : 0); }
};

/// The row of rel (2 span rows) that a c2p or p2c index addresses:
/// transformers clamps the index into the table.
inline Index clamp_relative_row(Index index, Index span) { return std::clamp<Index>(index, 0, 2 * span - 1); }

/// Rows [first, first + count) of the relative embeddings (2 span rows).
struct RelativeRows {
  Index first = 0;
  Index count = 0;
};

/// The rows of rel that c2p or p2c reach in `tokens`-token sequences: the
/// indices clamp(span + bucket(r)) and clamp(span - bucket(r)) over every
/// distance r = query - key in (-tokens, tokens).
inline RelativeRows reached_relative_rows(const DisentangledOptions& options, Index tokens) {
  const Index span = options.span();
  Index low = 2 * span - 1, high = 0;
  for (Index r = 1 - tokens; r < tokens; ++r) {
    const Index bucket = relative_position_bucket(r, options.position_buckets, options.max_relative_positions);
    for (const Index row : {clamp_relative_row(span + bucket, span), clamp_relative_row(span - bucket, span)}) {
      low = std::min(low, row);
      high = std::max(high, row);
    }
  }
  return {low, high - low + 1};
}

/// Temporaries of the relative-position terms shared by every attention layer
/// of a model (beside BackwardScratch); each layer uses them only within one call.
template <Backend B>
struct DisentangledScratch {
  detail::Scratch<B> position_scores;         // (batch * heads * tokens, reached rows): Q Kr^T or K Qr^T, or grads
  detail::Scratch<B> p2c_transposed;          // (batch * heads * tokens, query tokens), or its grad
  detail::Scratch<B> d_rel_query, d_rel_key;  // (reached rows, hidden)
};

/// @tparam B  backend
/// @tparam A  adapter type the projection sites may carry
template <Backend B, Adapter A>
class DisentangledSelfAttention {
 public:
  using Site = LinearSite<B, A>;
  using Matrix = typename B::Matrix;
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  DisentangledSelfAttention() = default;
  /// query, key, value: (hidden x hidden). pos_key / pos_query only when
  /// share_att_key is false (transformers' pos_key_proj, pos_query_proj).
  DisentangledSelfAttention(Site query, Site key, Site value, std::optional<Site> pos_key,
                            std::optional<Site> pos_query, DisentangledOptions options)
      : query_(std::move(query)), key_(std::move(key)), value_(std::move(value)), pos_key_(std::move(pos_key)),
        pos_query_(std::move(pos_query)), options_(options), probability_dropout_(options.probability_dropout),
        position_dropout_(options.position_dropout) {
    const Index hidden = query_.out_features();
    check<ValueError>(options_.heads > 0 && hidden % options_.heads == 0, query_.name(), ": ", hidden,
                      " features do not split into ", options_.heads, " heads");
    for (const Site* s : {&key_, &value_})
      check<ShapeError>(s->out_features() == hidden && s->in_features() == query_.in_features(), s->name(),
                        ": expected shape ", hidden, " x ", query_.in_features(), ", got ", s->out_features(), " x ",
                        s->in_features());
    check<ValueError>(!options_.relative_attention || options_.span() > 0, query_.name(),
                      ": relative attention needs position_buckets or max_relative_positions > 0");
  }

  [[nodiscard]] Site& query() { return query_; }
  [[nodiscard]] Site& key() { return key_; }
  [[nodiscard]] Site& value() { return value_; }
  [[nodiscard]] std::optional<Site>& pos_key() { return pos_key_; }
  [[nodiscard]] std::optional<Site>& pos_query() { return pos_query_; }
  [[nodiscard]] bool has_pos_key() const { return pos_key_.has_value(); }
  [[nodiscard]] bool has_pos_query() const { return pos_query_.has_value(); }
  [[nodiscard]] const DisentangledOptions& options() const { return options_; }
  [[nodiscard]] Index head_dim() const { return query_.out_features() / options_.heads; }

  /// context from x (rows, hidden), rows = batch * tokens: (rows, hidden) for
  /// every token's queries, (batch, hidden) for the first token's. `rel`
  /// (2 span, hidden) are the normalised relative embeddings (ignored without
  /// relative attention); `mask` (batch x tokens) holds additive key scores.
  /// With a `dropout` stream (training) the two dropouts draw from it.
  void forward(View context, ConstView x, ConstView rel, ConstView mask, Index tokens,
               DisentangledScratch<B>& scratch, RandomStream* dropout = nullptr,
               Queries queries = Queries::every_token) {
    check<ShapeError>(tokens > 0 && x.rows % tokens == 0, query_.name(), ": ", x.rows,
                      " rows are not a whole number of ", tokens, "-token sequences");
    tokens_ = tokens;
    query_tokens_ = tokens / query_step(queries, tokens);
    batch_ = x.rows / tokens;
    require_shape(mask, batch_, tokens, query_.name() + " attention mask");
    const Index rows = x.rows, query_rows = batch_ * query_tokens_, hidden = query_.out_features();
    const Index heads = options_.heads, tq = query_tokens_;
    require_shape(context, query_rows, hidden, query_.name() + " context");
    ensure_positions(tokens);
    const View q = q_.rows(query_rows, hidden), k = k_.rows(rows, hidden), v = v_.rows(rows, hidden);
    query_.forward(q, query_rows_of(x), saved_q_);
    key_.forward(k, x, saved_k_);
    value_.forward(v, x, saved_v_);

    const View scores = probs_.rows(query_rows * heads, tokens);
    B::fill(scores, 0.0f);
    if (relative()) {
      require_shape(rel, 2 * options_.span(), hidden, query_.name() + " relative embeddings");
      rel = reached_rows(position_dropout_.forward(rel, dropout));
      const View rel_k = rel_k_.rows(rel.rows, hidden), rel_q = rel_q_.rows(rel.rows, hidden);
      if (options_.c2p) rel_key_site().forward(rel_k, rel, saved_rel_k_);
      if (options_.p2c) rel_query_site().forward(rel_q, rel, saved_rel_q_);
      if (options_.c2p) {
        const View pos = scratch.position_scores.rows(query_rows * heads, rel.rows);
        for_heads(blocks_of(pos, tq), heads_of(cv(q), tq), Op::N, rel_of(cv(rel_k)), Op::T, 1.0f, 0.0f);  // Q Kr^T
        B::gather_cols_periodic(scores, pos, c2p_table(), tq);
      }
      if (options_.p2c) {
        const View pos = scratch.position_scores.rows(rows * heads, rel.rows);
        for_heads(blocks_of(pos, tokens), heads_of(cv(k), tokens), Op::N, rel_of(cv(rel_q)), Op::T, 1.0f,
                  0.0f);  // K Qr^T
        const View transposed = scratch.p2c_transposed.rows(rows * heads, tq);
        B::gather_cols_periodic(transposed, pos, p2c_table(), tokens);
        B::transpose_blocks(scores, transposed, tokens, 1.0f);
      }
    }
    for_heads(blocks_of(scores, tq), heads_of(cv(q), tq), Op::N, heads_of(cv(k), tokens), Op::T, 1.0f,
              1.0f);  // + Q K^T
    B::scale(scores, inv_scale());
    for (Index n = 0; n < batch_; ++n)
      B::add_row_vector(scores.row_block(n * heads * tq, heads * tq), mask.row_block(n, 1));
    B::softmax_rows(scores);
    const ConstView weights = probability_dropout_.forward(scores, dropout);
    for_heads(heads_of(context, tq), blocks_of(weights, tq), Op::N, heads_of(cv(v), tokens), Op::N, 1.0f,
              0.0f);  // P V
  }

  /// dx (rows, hidden) from d_context (as the forward's context); adapter (and
  /// SNIP weight) gradients of all sites accumulate, including through the
  /// relative-position paths.
  void backward(View dx, ConstView d_context, ConstView x, ConstView rel, BackwardScratch<B>& common,
                DisentangledScratch<B>& scratch) {
    rel = position_dropout_.output(rel);
    const Index rows = x.rows, query_rows = batch_ * query_tokens_, hidden = query_.out_features();
    const Index heads = options_.heads, tokens = tokens_, tq = query_tokens_;
    check<ShapeError>(rows == batch_ * tokens_, query_.name(), ": backward got ", rows, " rows but forward saw ",
                      batch_ * tokens_);
    const ConstView probs = probs_.rows(query_rows * heads);
    const ConstView q = q_.rows(query_rows), k = k_.rows(rows), v = v_.rows(rows);
    const View d_scores = common.d_scores.rows(query_rows * heads, tokens);  // dP, then dS
    const View d_value = common.d_value.rows(rows, hidden);
    for_heads(blocks_of(d_scores, tq), heads_of(d_context, tq), Op::N, heads_of(v, tokens), Op::T, 1.0f,
              0.0f);  // dC V^T
    for_heads(heads_of(d_value, tokens), blocks_of(probability_dropout_.output(probs), tq), Op::T,
              heads_of(d_context, tq), Op::N, 1.0f, 0.0f);  // P^T dC
    probability_dropout_.backward(d_scores);
    B::softmax_rows_backward(d_scores, probs, d_scores);
    B::scale(d_scores, inv_scale());  // gradient of the pre-scale sum
    const View d_query = common.d_query.rows(query_rows, hidden), d_key = common.d_key.rows(rows, hidden);
    for_heads(heads_of(d_query, tq), blocks_of(cv(d_scores), tq), Op::N, heads_of(k, tokens), Op::N, 1.0f,
              0.0f);  // dS K
    for_heads(heads_of(d_key, tokens), blocks_of(cv(d_scores), tq), Op::T, heads_of(q, tq), Op::N, 1.0f,
              0.0f);  // dS^T Q

    if (relative()) {
      rel = reached_rows(rel);
      const Index rel_rows = rel.rows;
      if (options_.c2p) {
        const ConstView rel_k = rel_k_.rows(rel_rows);
        const View d_pos = scratch.position_scores.rows(query_rows * heads, rel_rows);
        B::fill(d_pos, 0.0f);
        B::scatter_add_cols_periodic(d_pos, d_scores, c2p_table(), tq, 1.0f);
        for_heads(heads_of(d_query, tq), blocks_of(cv(d_pos), tq), Op::N, rel_of(rel_k), Op::N, 1.0f,
                  1.0f);  // += dC2 Kr
        const View d_rel_k = scratch.d_rel_key.rows(rel_rows, hidden);
        B::fill(d_rel_k, 0.0f);
        sum_over_images(d_rel_k, cv(d_pos), q, tq);  // dKr_h = sum_n dC2^T Q
        rel_key_site().backward(View{}, d_rel_k, rel, saved_rel_k_);
      }
      if (options_.p2c) {
        const ConstView rel_q = rel_q_.rows(rel_rows);
        const View d_transposed = scratch.p2c_transposed.rows(rows * heads, tq);
        B::transpose_blocks(d_transposed, d_scores, tq, 0.0f);
        const View d_pos = scratch.position_scores.rows(rows * heads, rel_rows);
        B::fill(d_pos, 0.0f);
        B::scatter_add_cols_periodic(d_pos, d_transposed, p2c_table(), tokens, 1.0f);
        for_heads(heads_of(d_key, tokens), blocks_of(cv(d_pos), tokens), Op::N, rel_of(rel_q), Op::N, 1.0f,
                  1.0f);  // += dD Qr
        const View d_rel_q = scratch.d_rel_query.rows(rel_rows, hidden);
        B::fill(d_rel_q, 0.0f);
        sum_over_images(d_rel_q, cv(d_pos), k, tokens);  // dQr_h = sum_n dD^T K
        rel_query_site().backward(View{}, d_rel_q, rel, saved_rel_q_);
      }
    }

    // The three projections read the same x: their input gradients sum in dx
    // (the query's only on its rows when it saw the first tokens alone).
    key_.backward(dx, d_key, x, saved_k_);
    value_.backward(dx, d_value, x, saved_v_, Site::InputGrad::add);
    query_.backward(query_rows_of(dx), d_query, query_rows_of(x), saved_q_, Site::InputGrad::add);
  }

  /// Exchanges the forward state (not the weights, nor the per-length position
  /// indices) with another attention block.
  void swap_activations(DisentangledSelfAttention& other) noexcept {
    std::swap(q_, other.q_);
    std::swap(k_, other.k_);
    std::swap(v_, other.v_);
    std::swap(tokens_, other.tokens_);
    std::swap(query_tokens_, other.query_tokens_);
    std::swap(batch_, other.batch_);
    std::swap(rel_q_, other.rel_q_);
    std::swap(rel_k_, other.rel_k_);
    std::swap(probs_, other.probs_);
    std::swap(saved_q_, other.saved_q_);
    std::swap(saved_k_, other.saved_k_);
    std::swap(saved_v_, other.saved_v_);
    std::swap(saved_rel_q_, other.saved_rel_q_);
    std::swap(saved_rel_k_, other.saved_rel_k_);
    probability_dropout_.swap_activations(other.probability_dropout_);
    position_dropout_.swap_activations(other.position_dropout_);
  }

 private:
  template <class T>
  using Blocks = detail::HeadBlocks<T, typename B::Space>;

  [[nodiscard]] bool relative() const { return options_.relative_attention && (options_.c2p || options_.p2c); }
  Site& rel_key_site() { return pos_key_ ? *pos_key_ : key_; }
  Site& rel_query_site() { return pos_query_ ? *pos_query_ : query_; }
  [[nodiscard]] float inv_scale() const {
    // transformers: sqrt(float32(d) * factor)
    return 1.0f / std::sqrt(static_cast<float>(head_dim()) * static_cast<float>(options_.scale_factor()));
  }

  /// Activations of `per_image` rows per image (every token's, or the queries').
  template <class T>
  [[nodiscard]] Blocks<T> heads_of(MatrixView<T, typename B::Space> m, Index per_image) const {
    return detail::activation_heads(m, per_image, head_dim());
  }
  /// Per-(image, head) blocks of `per_block` rows (batch * heads * per_block,
  /// cols), rows ordered (image, head, token): scores, position scores.
  template <class T>
  [[nodiscard]] Blocks<T> blocks_of(MatrixView<T, typename B::Space> m, Index per_block) const {
    return detail::score_heads(m, options_.heads, per_block);
  }
  /// The rows of an input-side matrix (rows, hidden) whose queries the forward computed.
  template <class T>
  [[nodiscard]] MatrixView<T, typename B::Space> query_rows_of(MatrixView<T, typename B::Space> m) const {
    return m.every_nth_row(tokens_ / query_tokens_);
  }
  /// Per computed query position, its c2p index list over the keys.
  [[nodiscard]] const typename B::Indices& c2p_table() const {
    return query_tokens_ == tokens_ ? c2p_table_ : c2p_first_table_;
  }
  /// Per key position, its p2c index list over the computed queries.
  [[nodiscard]] const typename B::Indices& p2c_table() const {
    return query_tokens_ == tokens_ ? p2c_table_ : p2c_first_table_;
  }
  /// The rows of rel (2 span, hidden) that the gather tables reach.
  [[nodiscard]] ConstView reached_rows(ConstView rel) const { return rel.row_block(reached_.first, reached_.count); }
  /// Relative projections (reached rows, hidden): the same block for every image.
  [[nodiscard]] Blocks<const float> rel_of(ConstView m) const {
    return {m.block(0, 0, m.rows, head_dim()), 0, head_dim()};
  }

  /// c(n, h) = alpha op(a(n, h)) op(b(n, h)) + beta c(n, h) for all images and heads.
  template <class X, class Y>
  void for_heads(Blocks<float> c, X a, Op op_a, Y b, Op op_b, float alpha, float beta) const {
    detail::per_head_gemm<B>(c, a, op_a, b, op_b, alpha, beta, batch_, options_.heads);
  }

  /// d_rel[:, head h] += sum over images n of d_pos(n, h)^T act(n, h), both of
  /// `per_image` rows per (image, head): per image one GEMM batched over the
  /// heads, whose outputs are disjoint column blocks (a GPU launches `batch`
  /// GEMMs, not batch x heads).
  void sum_over_images(View d_rel, ConstView d_pos, ConstView act, Index per_image) const {
    const Index heads = options_.heads, d = head_dim();
    for (Index n = 0; n < batch_; ++n) {
      const ConstView first_head = d_pos.block(n * heads * per_image, 0, per_image, d_pos.cols);
      B::gemm_strided_batched(d_rel.block(0, 0, d_rel.rows, d), first_head, Op::T,
                              act.block(n * per_image, 0, per_image, d), Op::N, 1.0f, 1.0f, heads,
                              /*stride_c=*/d, /*stride_a=*/per_image * d_pos.ld, /*stride_b=*/d);
    }
  }

  /// The gather tables for a sequence length (rebuilt when it changes).
  void ensure_positions(Index tokens) {
    if (table_tokens_ == tokens) return;
    const Index span = options_.span();
    reached_ = reached_relative_rows(options_, tokens);
    // An index into rel as a row of the reached block.
    const auto row = [&](Index index) {
      return static_cast<std::int32_t>(clamp_relative_row(index, span) - reached_.first);
    };
    const auto bucket = [&](Index r) {
      return relative_position_bucket(r, options_.position_buckets, options_.max_relative_positions);
    };
    std::vector<std::int32_t> c2p, p2c, p2c_first;
    for (Index a = 0; a < tokens; ++a) {
      for (Index b = 0; b < tokens; ++b) c2p.push_back(row(bucket(a - b) + span));  // query a, key b
      for (Index b = 0; b < tokens; ++b) p2c.push_back(row(span - bucket(a - b)));     // key a, query b
      p2c_first.push_back(row(span - bucket(a)));                                       // key a, query 0 alone
    }
    c2p_table_ = B::make_indices(c2p);
    c2p_first_table_ = B::make_indices(std::span(c2p).first(static_cast<std::size_t>(tokens)));  // query 0's row
    p2c_table_ = B::make_indices(p2c);
    p2c_first_table_ = B::make_indices(p2c_first);
    table_tokens_ = tokens;
  }

  static ConstView cv(ConstView m) { return m; }

  Site query_, key_, value_;
  std::optional<Site> pos_key_, pos_query_;
  DisentangledOptions options_;
  Index tokens_ = 0;        // of the last forward
  Index query_tokens_ = 0;  // per image whose queries it computed: tokens_ or 1
  Index batch_ = 0;
  detail::Scratch<B> q_, k_, v_;  // (query rows, hidden), (rows, hidden) twice
  detail::Scratch<B> rel_q_, rel_k_;  // (reached rows, hidden)
  detail::Scratch<B> probs_;      // (batch * heads * query tokens, tokens)
  CopyingDropout<B> probability_dropout_;  // dropout(P) multiplies V in training
  CopyingDropout<B> position_dropout_;     // this layer's dropped copy of rel in training
  // Row-major (position, index) tables for table_tokens_-token sequences:
  // c2p (query, key) and p2c (key, query), and their query-0-only forms.
  Index table_tokens_ = 0;
  RelativeRows reached_;  // the rows of rel the tables reach
  typename B::Indices c2p_table_, c2p_first_table_, p2c_table_, p2c_first_table_;
  typename Site::Saved saved_q_, saved_k_, saved_v_, saved_rel_q_, saved_rel_k_;
};

}  // namespace plora
