#pragma once
// Multi-head softmax self-attention with separate query / key / value sites and
// an output dense site (BERT / ViT layout):
//   Q, K, V = x Wq^T + bq, ...                          (rows, hidden), rows = batch * tokens
//   P_(n,h) = softmax(Q_(n,h) K_(n,h)^T / sqrt(d) + mask_n)   (tokens, tokens) per image n, head h
//   out     = concat_h(dropout(P_(n,h)) V_(n,h)) Wo^T + bo   (dropout in training only)
// Head h of image n is the column block [h d, (h + 1) d) of rows [n T, (n + 1) T):
// a strided view, so the per-head products are batched GEMMs on views, no copies.
#include <cmath>
#include <string>
#include <utility>

#include "plora/backend/scratch.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/nn/backward_scratch.hpp"
#include "plora/nn/dropout.hpp"
#include "plora/nn/linear_site.hpp"

namespace plora {

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
  /// The attention probabilities of the last forward, (batch * heads * tokens, tokens),
  /// rows ordered (image, head, query token).
  [[nodiscard]] ConstView probabilities() const { return probs_.rows(batch_ * heads_ * tokens_); }

  /// out (rows, out) from x (rows, in), rows = batch * tokens. `mask` is empty
  /// or (batch x tokens) of additive key scores (0 to attend, a large negative
  /// value for padding), added to every head's scores of that image. With a
  /// `dropout` stream (training) P's dropout draws from it.
  void forward(View out, ConstView x, Index tokens, ConstView mask = {}, RandomStream* dropout = nullptr) {
    check<ShapeError>(tokens > 0 && x.rows % tokens == 0, query_.name(), ": ", x.rows,
                      " input rows are not a whole number of ", tokens, "-token sequences");
    tokens_ = tokens;
    batch_ = x.rows / tokens;
    check<ShapeError>(mask.empty() || (mask.rows == batch_ && mask.cols == tokens), query_.name(),
                      ": attention mask must be ", batch_, " x ", tokens, ", got ", mask.rows, " x ", mask.cols);
    const Index rows = x.rows, hidden = query_.out_features();
    const View q = q_.rows(rows, hidden), k = k_.rows(rows, hidden), v = v_.rows(rows, hidden);
    query_.forward(q, x, saved_query_);
    key_.forward(k, x, saved_key_);
    value_.forward(v, x, saved_value_);

    const View probs = probs_.rows(batch_ * heads_ * tokens, tokens);
    per_head(scores_of(probs), heads_of(cv(q)), Op::N, heads_of(cv(k)), Op::T, scale(), 0.0f);  // Q K^T / sqrt(d)
    if (!mask.empty())
      for (Index n = 0; n < batch_; ++n)
        B::add_row_vector(probs.row_block(n * heads_ * tokens, heads_ * tokens), mask.row_block(n, 1));
    B::softmax_rows(probs);
    const ConstView weights = probability_dropout_.forward(probs, dropout);
    const View context = context_.rows(rows, hidden);
    per_head(heads_of(context), scores_of(weights), Op::N, heads_of(cv(v)), Op::N, 1.0f, 0.0f);  // P V
    output_.forward(out, context, saved_output_);
  }

  /// dx (rows, in) from dout (rows, out) and the forward input x; site gradients
  /// accumulate. An empty dx skips the input gradient (site parameter grads are still filled).
  void backward(View dx, ConstView dout, ConstView x, BackwardScratch<B>& scratch) {
    const Index rows = x.rows, hidden = query_.out_features(), tokens = tokens_;
    check<ShapeError>(rows == batch_ * tokens_, query_.name(), ": backward got ", rows,
                      " input rows but forward saw ", batch_ * tokens_);
    const ConstView probs = probs_.rows(rows * heads_);
    const View d_context = scratch.d_context.rows(rows, hidden);
    output_.backward(d_context, dout, context_.rows(rows), saved_output_);

    const View d_probs = scratch.d_probs.rows(rows * heads_, tokens);
    const View d_value = scratch.d_value.rows(rows, hidden);
    per_head(scores_of(d_probs), heads_of(cv(d_context)), Op::N, heads_of(v_.rows(rows)), Op::T, 1.0f, 0.0f);  // dC V^T
    per_head(heads_of(d_value), scores_of(probability_dropout_.output(probs)), Op::T, heads_of(cv(d_context)), Op::N,
             1.0f, 0.0f);  // P^T dC
    probability_dropout_.backward(d_probs);
    const View d_scores = scratch.d_scores.rows(rows * heads_, tokens);
    B::softmax_rows_backward(d_scores, probs, d_probs);
    const View d_query = scratch.d_query.rows(rows, hidden), d_key = scratch.d_key.rows(rows, hidden);
    per_head(heads_of(d_query), scores_of(cv(d_scores)), Op::N, heads_of(k_.rows(rows)), Op::N, scale(), 0.0f);  // dS K
    per_head(heads_of(d_key), scores_of(cv(d_scores)), Op::T, heads_of(q_.rows(rows)), Op::N, scale(), 0.0f);  // dS^T Q

    // The three projections read the same x: their input gradients sum in dx.
    query_.backward(dx, d_query, x, saved_query_);
    key_.backward(dx, d_key, x, saved_key_, Site::InputGrad::add);
    value_.backward(dx, d_value, x, saved_value_, Site::InputGrad::add);
  }

  /// Exchanges the forward state (not the weights) with another attention block.
  void swap_activations(SelfAttention& other) noexcept {
    std::swap(q_, other.q_);
    std::swap(k_, other.k_);
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
  // One (image, head) operand and the element offsets to the next image and head.
  template <class T>
  struct Blocks {
    MatrixView<T, typename B::Space> first;
    Index image_stride;
    Index head_stride;
  };
  /// Activations (rows, hidden): head h of image n is the (tokens x d) block at (n T, h d).
  template <class T>
  [[nodiscard]] Blocks<T> heads_of(MatrixView<T, typename B::Space> m) const {
    return {m.block(0, 0, tokens_, head_dim()), tokens_ * m.ld, head_dim()};
  }
  /// Scores (batch * heads * tokens, tokens): (n, h) is the (tokens x tokens) block at row (n heads + h) T.
  template <class T>
  [[nodiscard]] Blocks<T> scores_of(MatrixView<T, typename B::Space> m) const {
    return {m.block(0, 0, tokens_, tokens_), heads_ * tokens_ * m.ld, tokens_ * m.ld};
  }

  /// c_(n,h) = alpha op(a_(n,h)) op(b_(n,h)) + beta c_(n,h) for every image n and
  /// head h: one strided-batched GEMM per head over the images, or per image over
  /// the heads, whichever makes fewer calls.
  void per_head(Blocks<float> c, Blocks<const float> a, Op op_a, Blocks<const float> b, Op op_b, float alpha,
                float beta) const {
    const bool over_images = batch_ >= heads_;
    const Index outer = over_images ? heads_ : batch_, inner = over_images ? batch_ : heads_;
    const auto at = [&](const auto& x, Index o) {
      const Index offset = o * (over_images ? x.head_stride : x.image_stride);
      return decltype(x.first){x.first.data + offset, x.first.rows, x.first.cols, x.first.ld};
    };
    const auto step = [&](const auto& x) { return over_images ? x.image_stride : x.head_stride; };
    for (Index o = 0; o < outer; ++o)
      B::gemm_strided_batched(at(c, o), at(a, o), op_a, at(b, o), op_b, alpha, beta, inner, step(c), step(a),
                              step(b));
  }

  static ConstView cv(ConstView m) { return m; }
  [[nodiscard]] float scale() const { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim()))); }

  Site query_, key_, value_, output_;
  Index heads_ = 1;
  Index tokens_ = 0;  // of the last forward
  Index batch_ = 0;
  detail::Scratch<B> q_, k_, v_;  // (rows, hidden)
  detail::Scratch<B> probs_;      // (batch * heads * tokens, tokens) softmax output
  CopyingDropout<B> probability_dropout_;  // dropout(P) multiplies V in training
  detail::Scratch<B> context_;    // (rows, hidden) input of the output site
  typename Site::Saved saved_query_, saved_key_, saved_value_, saved_output_;
};

}  // namespace plora
