#pragma once
// transformers' DebertaV2ForSequenceClassification (REFERENCE.md §2) with
// adaptable linear sites:
//   embeddings  word (+ absolute positions if position_biased_input, + token
//               types if type_vocab_size > 0, + embed_proj if embedding_size !=
//               hidden), LayerNorm, padded tokens zeroed
//   encoder     rel = LayerNorm(rel_embeddings) once per forward; per layer
//               a = LN(dropout(attention.output.dense(DisentangledAttention(x))) + x),
//               y = LN(dropout(output.dense(gelu(intermediate.dense(a)))) + a)
//   head        ContextPooler (token 0 -> dropout -> pooler.dense -> gelu) ->
//               dropout -> classifier; both trained in full (PEFT
//               modules_to_save), randomly initialised when the checkpoint has
//               none (deberta-v3-base)
//   loss        cross-entropy, or MSE when num_labels == 1 (STS-B)
// Dropouts as transformers places them (embeddings, pos_dropout on rel and
// attention probabilities in every layer, both residual branches, pooler,
// classifier), active between set_training(true) and set_training(false);
// like a model from from_pretrained, a new model evaluates. All draw from one
// counter-based stream, dropout_stream(), which a checkpoint should track.
//
// As the head reads token 0 alone, the last layer computes only token 0's
// output (its keys and values still see every token): the same logits and
// gradients for about 1/L less work; set_every_token(true) computes every
// token there.
//
// Site names are the PEFT module paths: "deberta.encoder.layer.3.attention.self.query_proj".
#include <algorithm>
#include <array>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "plora/backend/scratch.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/core/finite.hpp"
#include "plora/core/host_matrix.hpp"
#include "plora/core/parameter.hpp"
#include "plora/core/rng.hpp"
#include "plora/models/batches.hpp"
#include "plora/models/deberta_v2_config.hpp"
#include "plora/models/detail/encoder_model.hpp"
#include "plora/models/detail/layer_stack.hpp"
#include "plora/models/weight_source.hpp"
#include "plora/nn/backward_scratch.hpp"
#include "plora/nn/cross_entropy.hpp"
#include "plora/nn/disentangled_attention.hpp"
#include "plora/nn/dropout.hpp"
#include "plora/nn/layernorm.hpp"
#include "plora/nn/linear_site.hpp"
#include "plora/nn/mlp.hpp"
#include "plora/nn/trainable_linear.hpp"

namespace plora {

/// Every layer's disentangled-attention settings under `config`.
inline DisentangledOptions disentangled_options(const DebertaV2Config& config) {
  DisentangledOptions o;
  o.heads = config.num_attention_heads;
  o.relative_attention = config.relative_attention;
  const auto has = [&](const char* t) {
    return std::find(config.pos_att_type.begin(), config.pos_att_type.end(), t) != config.pos_att_type.end();
  };
  o.c2p = has("c2p");
  o.p2c = has("p2c");
  o.position_buckets = config.position_buckets;
  o.max_relative_positions =
      config.max_relative_positions < 1 ? config.max_position_embeddings : config.max_relative_positions;
  o.probability_dropout = config.attention_probs_dropout_prob;
  o.position_dropout = config.hidden_dropout_prob;
  return o;
}

/// One post-LN DeBERTa encoder layer (transformers' DebertaV2Layer).
/// @tparam B  backend
/// @tparam A  adapter type its sites may carry
template <Backend B, Adapter A>
class DebertaV2Layer {
 public:
  using Site = LinearSite<B, A>;
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  /// Site suffixes in the order site_names() lists them; the pos_* sites exist
  /// only without share_att_key.
  static constexpr std::array<std::string_view, 8> kSites = {
      "attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj",
      "attention.output.dense",    "intermediate.dense",      "output.dense",
      "attention.self.pos_key_proj", "attention.self.pos_query_proj"};

  /// hidden_dropout: on both residual branches in training (hidden_dropout_prob).
  DebertaV2Layer(DisentangledSelfAttention<B, A> attention, Site attention_output, LayerNorm<B> attention_norm,
                 Mlp<B, A> mlp, LayerNorm<B> output_norm, float hidden_dropout)
      : attention_(std::move(attention)), attention_output_(std::move(attention_output)),
        attention_norm_(std::move(attention_norm)), mlp_(std::move(mlp)), output_norm_(std::move(output_norm)),
        attention_dropout_(hidden_dropout), output_dropout_(hidden_dropout) {}

  /// Whether the layer has the site with this suffix.
  [[nodiscard]] bool has_site(std::string_view suffix) const {
    if (suffix == kSites[6]) return attention_.has_pos_key();
    if (suffix == kSites[7]) return attention_.has_pos_query();
    return std::find(kSites.begin(), kSites.begin() + 6, suffix) != kSites.begin() + 6;
  }
  [[nodiscard]] Site& site(std::string_view suffix) {
    if (suffix == kSites[0]) return attention_.query();
    if (suffix == kSites[1]) return attention_.key();
    if (suffix == kSites[2]) return attention_.value();
    if (suffix == kSites[3]) return attention_output_;
    if (suffix == kSites[4]) return mlp_.intermediate();
    if (suffix == kSites[5]) return mlp_.output();
    check<ValueError>(has_site(suffix), "DeBERTa layer has no site '", suffix, "'");
    return suffix == kSites[6] ? *attention_.pos_key() : *attention_.pos_query();
  }

  /// y from x (rows, hidden): (rows, hidden) for every token, (batch, hidden)
  /// for the first token of each sequence only (everything above the keys and
  /// values then runs on those rows); rel and mask as DisentangledSelfAttention
  /// takes them. With a `dropout` stream (training) the dropouts draw from it.
  /// `keep` as Mlp takes it.
  void forward(View y, ConstView x, ConstView rel, ConstView mask, Index tokens, DisentangledScratch<B>& scratch,
               RandomStream* dropout, Queries queries = Queries::every_token, Keep keep = Keep::for_backward) {
    const Index hidden = x.cols;
    token_step_ = query_step(queries, tokens);
    const Index out_rows = x.rows / token_step_;
    const View context = context_.rows(out_rows, hidden), z1 = z1_.rows(out_rows, hidden);
    const View a = a_.rows(out_rows, hidden), z2 = z2_.rows(out_rows, hidden);
    attention_.forward(context, x, rel, mask, tokens, scratch, dropout, queries);
    const ConstView x_rows = x.every_nth_row(token_step_);
    attention_output_.forward(z1, context, saved_output_, attention_dropout_.residual_to_fuse(x_rows, dropout));
    attention_dropout_.forward_and_add(z1, dropout, x_rows);  // z1 = x + dropout(attention output)
    attention_norm_.forward(a, z1);
    mlp_.forward(z2, a, output_dropout_.residual_to_fuse(a, dropout), keep);
    output_dropout_.forward_and_add(z2, dropout, a);  // z2 = a + dropout(mlp)
    output_norm_.forward(y, z2);
  }

  /// dx (rows, hidden) from dy (as the forward's y); an empty dx skips the
  /// input gradient. Site grads accumulate.
  void backward(View dx, ConstView dy, ConstView x, ConstView rel, BackwardScratch<B>& common,
                DisentangledScratch<B>& scratch) {
    const Index out_rows = x.rows / token_step_, hidden = x.cols;
    const View dz = common.d_hidden.rows(out_rows, hidden), da = common.d_normed.rows(out_rows, hidden);
    const View d_branch = common.d_branch.rows(out_rows, hidden);
    output_norm_.backward(dz, dy, z2_.rows(out_rows));  // dz2
    mlp_.backward(da, output_dropout_.backward(d_branch, dz), a_.rows(out_rows), common);
    B::axpy(da, 1.0f, dz);
    attention_norm_.backward(dz, da, z1_.rows(out_rows));  // dz1
    const View d_context = common.d_context.rows(out_rows, hidden);
    attention_output_.backward(d_context, attention_dropout_.backward(d_branch, dz), context_.rows(out_rows),
                               saved_output_);
    attention_.backward(dx, d_context, x, rel, common, scratch);
    if (!dx.empty()) B::axpy(dx.every_nth_row(token_step_), 1.0f, dz);
  }

  /// Exchanges the forward state (not the weights) with another layer.
  void swap_activations(DebertaV2Layer& other) noexcept {
    attention_.swap_activations(other.attention_);
    attention_norm_.swap_activations(other.attention_norm_);
    mlp_.swap_activations(other.mlp_);
    output_norm_.swap_activations(other.output_norm_);
    std::swap(context_, other.context_);
    std::swap(z1_, other.z1_);
    std::swap(a_, other.a_);
    std::swap(z2_, other.z2_);
    std::swap(token_step_, other.token_step_);
    std::swap(saved_output_, other.saved_output_);
    attention_dropout_.swap_activations(other.attention_dropout_);
    output_dropout_.swap_activations(other.output_dropout_);
  }

 private:
  DisentangledSelfAttention<B, A> attention_;
  Site attention_output_;
  LayerNorm<B> attention_norm_;
  Mlp<B, A> mlp_;
  LayerNorm<B> output_norm_;
  Index token_step_ = 1;  // 1, or tokens when the last forward computed first tokens only
  // (rows / token_step_, hidden): attention context, pre-LN sums, LN1 output
  detail::Scratch<B> context_, z1_, a_, z2_;
  typename Site::Saved saved_output_;
  Dropout<B> attention_dropout_, output_dropout_;  // on the two residual branches
};

/// DebertaV2ForSequenceClassification on backend B with adapters of type A.
/// forward_backward() accumulates gradients (call zero_grad() between steps).
/// @tparam B  backend
/// @tparam A  adapter type attachable to every site
template <Backend B, Adapter A>
class DebertaV2 : public detail::EncoderModel<B, A, DebertaV2Layer<B, A>> {
  using Encoder = detail::EncoderModel<B, A, DebertaV2Layer<B, A>>;

 public:
  using BackendType = B;
  using Batch = TokenBatch;
  using Site = typename Encoder::Site;
  using Matrix = typename B::Matrix;
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  static constexpr std::string_view kLayerPrefix = "deberta.encoder.layer.";

  /// Builds the model from `weights` under the Hub keys of
  /// DebertaV2ForSequenceClassification. Every backbone tensor must be present
  /// (IoError naming the key otherwise); pooler.dense and classifier are drawn
  /// like transformers' init (N(0, 0.02) weights, zero biases) from stream
  /// (seed, key) when absent. Throws ValueError for an unsupported config.
  DebertaV2(const DebertaV2Config& config, const WeightSource& weights, std::uint64_t seed = 0)
      : Encoder("DeBERTa", kLayerPrefix, RandomStream(seed, stream_id("deberta.dropout"))),
        config_(validated(config)) {
    const Index hidden = config_.hidden_size, embedding = embedding_size(), inner = config_.intermediate_size;
    const auto load = [&](const std::string& key, Index rows, Index cols) {
      return detail::required_weight<B>(weights, "DeBERTa", key, rows, cols);
    };
    const auto layernorm = [&](const std::string& key) {
      return LayerNorm<B>(key, load(key + ".weight", 1, hidden), load(key + ".bias", 1, hidden), config_.layer_norm_eps);
    };
    const auto site = [&](const std::string& key, Index out, Index in) {
      return Site(key, load(key + ".weight", out, in), load(key + ".bias", 1, out));
    };
    const auto head = [&](const std::string& key, Index out, Index in) {
      return detail::linear_head<B>(weights, "DeBERTa", key, out, in, RandomStream(seed, stream_id(key)));
    };

    word_embeddings_ = load("deberta.embeddings.word_embeddings.weight", config_.vocab_size, embedding);
    if (config_.position_biased_input)
      position_embeddings_ = load("deberta.embeddings.position_embeddings.weight", config_.max_position_embeddings, embedding);
    if (config_.type_vocab_size > 0)
      token_type_embeddings_ = load("deberta.embeddings.token_type_embeddings.weight", config_.type_vocab_size, embedding);
    if (embedding != hidden) embed_proj_ = load("deberta.embeddings.embed_proj.weight", hidden, embedding);
    embedding_norm_ = layernorm("deberta.embeddings.LayerNorm");

    const DisentangledOptions options = disentangled_options(config_);
    if (options.relative_attention) {
      rel_embeddings_ = load("deberta.encoder.rel_embeddings.weight", 2 * options.span(), hidden);
      if (normalise_rel()) rel_norm_ = layernorm("deberta.encoder.LayerNorm");
    }
    const bool separate_pos = options.relative_attention && !config_.share_att_key;
    // No reserve(num_hidden_layers): a corrupt count must fail at the first
    // layer the weights lack, not size an allocation.
    for (Index i = 0; i < config_.num_hidden_layers; ++i) {
      const std::string p = std::string(kLayerPrefix) + std::to_string(i) + ".";
      const auto name = [&](std::size_t s) { return p + std::string(DebertaV2Layer<B, A>::kSites[s]); };
      std::optional<Site> pos_key, pos_query;
      if (separate_pos && options.c2p) pos_key = site(name(6), hidden, hidden);
      if (separate_pos && options.p2c) pos_query = site(name(7), hidden, hidden);
      DisentangledSelfAttention<B, A> attention(site(name(0), hidden, hidden), site(name(1), hidden, hidden),
                                                site(name(2), hidden, hidden), std::move(pos_key),
                                                std::move(pos_query), options);
      layers_.emplace_back(std::move(attention), site(name(3), hidden, hidden),
                           layernorm(p + "attention.output.LayerNorm"),
                           Mlp<B, A>(site(name(4), inner, hidden), site(name(5), hidden, inner)),
                           layernorm(p + "output.LayerNorm"), config_.hidden_dropout_prob);
    }
    embedding_dropout_ = Dropout<B>(config_.hidden_dropout_prob);
    pooler_dropout_ = CopyingDropout<B>(config_.pooler_dropout);
    classifier_dropout_ = Dropout<B>(config_.cls_dropout < 0.0f ? config_.hidden_dropout_prob : config_.cls_dropout);
    pooler_ = head("pooler.dense", hidden, hidden);
    classifier_ = head("classifier", config_.num_labels, hidden);
    this->size_hidden_states();
  }

  [[nodiscard]] const DebertaV2Config& config() const { return config_; }
  [[nodiscard]] TrainableLinear<B>& pooler() { return pooler_; }
  [[nodiscard]] TrainableLinear<B>& classifier() { return classifier_; }
  /// Whether the loss is MSE on one output (STS-B) rather than cross-entropy.
  [[nodiscard]] bool regression() const { return config_.num_labels == 1; }

  /// logits (batch, num_labels), valid until the next forward. An inference
  /// pass: the layers hand one set of activation buffers along, so memory
  /// holds one layer's activations rather than every layer's.
  ConstView forward(const TokenBatch& batch) { return forward_pass(batch, Keep::nothing); }
  /// forward(batch)'s logits from layer `first` on (LayeredModel): `input` is
  /// hidden_state(first) of a forward of `batch` with the same weights below
  /// that layer, (batch * seq_len, hidden). The ratio extractors' probes of a
  /// weight in layer l rerun layers l.. only.
  ConstView forward_from(Index first, ConstView input, const TokenBatch& batch) {
    detail::check_forward_from("DeBERTa", first, config_.num_hidden_layers, input, config_.hidden_size, batch.batch,
                               "sequences", batch.seq_len);
    return forward_pass(batch, Keep::nothing, static_cast<std::size_t>(first), input);
  }

  /// Mean loss of the batch (cross-entropy on labels, or MSE on targets when
  /// num_labels == 1); adds its gradients to parameters().
  float forward_backward(const TokenBatch& batch) {
    const Index n = batch.batch;
    if (regression()) {
      check<ShapeError>(static_cast<Index>(batch.targets.size()) == n, "DeBERTa batch: ", batch.targets.size(),
                        " regression targets for ", n, " sequences");
      const std::size_t bad = first_non_finite(batch.targets);
      check<ValueError>(bad == batch.targets.size(), "DeBERTa batch: regression target ", bad, " is ",
                        bad < batch.targets.size() ? batch.targets[bad] : 0.0f);
    } else {
      check<ShapeError>(static_cast<Index>(batch.labels.size()) == n, "DeBERTa batch: ", batch.labels.size(),
                        " labels for ", n, " sequences");
      for (const std::int32_t label : batch.labels)
        check<ValueError>(label >= 0 && label < config_.num_labels, "DeBERTa batch: label ", label,
                          " outside [0, ", config_.num_labels, ")");
    }
    const ConstView logits = forward_pass(batch, Keep::for_backward);
    const Index rows = n * tokens_, hidden = config_.hidden_size;
    const View d_logits = d_logits_.rows(n, config_.num_labels);
    const float loss = regression() ? mse(d_logits, logits, batch.targets)
                                    : loss_.forward_backward(d_logits, logits, batch.labels);
    const View d_pooled = d_pooled_.rows(n, hidden), d_pre = d_pooled_pre_.rows(n, hidden);
    classifier_.backward(d_pooled, d_logits, pooled_.rows(n));
    B::gelu_backward(d_pre, classifier_dropout_.backward(d_pooled, d_pooled), pooled_pre_.rows(n));

    const Index top_rows = n * top_token_step();
    const View d_top = d_stream_[0].rows(top_rows, hidden);
    if (top_rows != n) B::fill(d_top, 0.0f);  // only token 0 reaches the head
    const View d_context = cls_rows(d_top);
    pooler_.backward(d_context, d_pre, pooler_dropout_.output(cls_rows(hidden_.back().rows(top_rows))));
    pooler_dropout_.backward(d_context);
    detail::backward_layers(layers_, d_stream_, top_rows, rows, hidden, [&](std::size_t l, View dx, ConstView dy) {
      layers_[l].backward(dx, dy, hidden_[l].rows(rows), rel_, scratch_, attn_);
    });
    return loss;
  }

  /// Trainable tensors: every attached adapter's ("<site>.<param>"), then
  /// "pooler.dense.{weight,bias}" and "classifier.{weight,bias}".
  [[nodiscard]] ParameterList<typename B::Space> parameters() {
    ParameterList<typename B::Space> out = this->adapter_parameters();
    append_parameters(out, pooler_.name(), pooler_.parameters());
    append_parameters(out, classifier_.name(), classifier_.parameters());
    return out;
  }
  void zero_grad() {
    this->zero_adapter_grads();
    pooler_.zero_grad();
    classifier_.zero_grad();
  }

 private:
  static constexpr float kMaskedScore = -1e30f;

  /// forward(), forward_from() and forward_backward()'s pass from layer
  /// `first`, whose input is `input` or else the tokens' embeddings; `keep`
  /// says whether every layer keeps its activations for a backward.
  ConstView forward_pass(const TokenBatch& batch, Keep keep, std::size_t first = 0,
                         ConstView input = {}) {
    validate(batch);
    const Index n = batch.batch, tokens = batch.seq_len, rows = n * tokens, hidden = config_.hidden_size;
    batch_ = n;
    tokens_ = tokens;
    RandomStream* const dropout = training_ ? &dropout_stream_ : nullptr;
    const View stream_in = hidden_[first].rows(rows, hidden);
    if (input.empty()) {
      embed(stream_in, batch);
      embedding_dropout_.forward(stream_in, dropout);  // the embeddings are frozen: no backward
    } else if (input.data != stream_in.data) {
      B::copy(stream_in, input);
    }

    // Padding keys get a large negative score (transformers fills them with the dtype minimum).
    HostMatrix mask(n, tokens);
    for (Index i = 0; i < rows; ++i)
      mask.values()[std::size_t(i)] = batch.attention_mask[std::size_t(i)] != 0 ? 0.0f : kMaskedScore;
    const View key_mask = mask_.rows(n, tokens);
    B::upload(key_mask, mask.view());

    ConstView rel;
    if (disentangled_options(config_).relative_attention) {
      rel = rel_embeddings_.view();
      if (normalise_rel()) {
        const View normed = rel_normed_.rows(rel.rows, hidden);
        rel_norm_.forward(normed, rel);
        rel = normed;
      }
    }
    rel_ = rel;
    detail::forward_layers(layers_, keep, first, inference_holder_, [&](std::size_t l) {
      const Queries queries = detail::layer_queries(l, layers_.size(), every_token_);
      const Index out_rows = rows / query_step(queries, tokens);
      layers_[l].forward(hidden_[l + 1].rows(out_rows, hidden), hidden_[l].rows(rows), rel, key_mask, tokens, attn_,
                         dropout, queries, keep);
    });

    const ConstView context = pooler_dropout_.forward(cls_rows(hidden_.back().rows(n * top_token_step())), dropout);
    const View pre = pooled_pre_.rows(n, hidden), pooled = pooled_.rows(n, hidden);
    pooler_.forward(pre, context);
    B::gelu_forward(pooled, pre);
    classifier_dropout_.forward(pooled, dropout);  // in place: the GELU backward reads pre, not pooled
    const View logits = logits_.rows(n, config_.num_labels);
    classifier_.forward(logits, pooled);
    return logits;
  }

  static DebertaV2Config validated(const DebertaV2Config& c) {
    check<ValueError>(c.vocab_size > 0 && c.hidden_size > 0 && c.num_hidden_layers >= 0 &&
                          c.num_attention_heads > 0 && c.intermediate_size > 0 && c.num_labels > 0 &&
                          c.max_position_embeddings > 0 && c.type_vocab_size >= 0,
                      "DeBERTa config: sizes must be positive (vocab_size ", c.vocab_size, ", hidden_size ",
                      c.hidden_size, ", num_hidden_layers ", c.num_hidden_layers, ", num_attention_heads ",
                      c.num_attention_heads, ", intermediate_size ", c.intermediate_size, ", num_labels ",
                      c.num_labels, ", max_position_embeddings ", c.max_position_embeddings, ")");
    check<ValueError>(c.hidden_size % c.num_attention_heads == 0, "DeBERTa config: hidden_size ", c.hidden_size,
                      " is not divisible by num_attention_heads ", c.num_attention_heads);
    check<ValueError>(c.hidden_act == "gelu" && c.pooler_hidden_act == "gelu", "DeBERTa config: hidden_act '",
                      c.hidden_act, "' / pooler_hidden_act '", c.pooler_hidden_act,
                      "' not supported (only the exact erf \"gelu\")");
    // One bucket would halve to zero in the log-bucketing (transformers divides by it too).
    check<ValueError>(c.position_buckets <= 0 || c.position_buckets >= 2, "DeBERTa config: position_buckets ",
                      c.position_buckets, " must be <= 0 (none) or >= 2");
    check<ValueError>(c.pooler_hidden_size < 1 || c.pooler_hidden_size == c.hidden_size,
                      "DeBERTa config: pooler_hidden_size ", c.pooler_hidden_size, " must equal hidden_size ",
                      c.hidden_size);
    for (const auto& t : c.pos_att_type)
      check<ValueError>(t == "c2p" || t == "p2c", "DeBERTa config: pos_att_type '", t,
                        "' not supported (only c2p and p2c)");
    check<ValueError>(c.problem_type.empty() || c.problem_type == "single_label_classification" ||
                          (c.problem_type == "regression" && c.num_labels == 1),
                      "DeBERTa config: problem_type '", c.problem_type, "' with num_labels ", c.num_labels,
                      " not supported");
    check<ValueError>(c.layer_norm_eps > 0.0f, "DeBERTa config: layer_norm_eps ", c.layer_norm_eps, " must be > 0");
    for (const auto& [key, p] : {std::pair{"hidden_dropout_prob", c.hidden_dropout_prob},
                                 {"attention_probs_dropout_prob", c.attention_probs_dropout_prob},
                                 {"pooler_dropout", c.pooler_dropout}})
      check<ValueError>(p >= 0.0f && p < 1.0f, "DeBERTa config: ", key, " ", p, " is outside [0, 1)");
    check<ValueError>(c.cls_dropout < 1.0f, "DeBERTa config: cls_dropout ", c.cls_dropout,
                      " must be < 1 (negative: hidden_dropout_prob)");
    return c;
  }

  [[nodiscard]] Index embedding_size() const {
    return config_.embedding_size < 1 ? config_.hidden_size : config_.embedding_size;
  }
  /// transformers splits norm_rel_ebd on '|' and looks for "layer_norm".
  [[nodiscard]] bool normalise_rel() const { return config_.norm_rel_ebd.find("layer_norm") != std::string::npos; }

  void validate(const TokenBatch& b) const {
    check<ShapeError>(b.batch > 0 && b.seq_len > 0, "DeBERTa batch: empty (", b.batch, " x ", b.seq_len, ")");
    check<ShapeError>(b.batch <= std::numeric_limits<Index>::max() / b.seq_len, "DeBERTa batch: ", b.batch, " x ",
                      b.seq_len, " tokens overflow a count");
    const auto total = static_cast<std::size_t>(b.batch * b.seq_len);
    check<ShapeError>(b.input_ids.size() == total && b.attention_mask.size() == total &&
                          (b.token_type_ids.empty() || b.token_type_ids.size() == total),
                      "DeBERTa batch: input_ids / attention_mask / token_type_ids must hold ", b.batch, " x ",
                      b.seq_len, " values, got ", b.input_ids.size(), " / ", b.attention_mask.size(), " / ",
                      b.token_type_ids.size());
    check<ValueError>(b.seq_len <= config_.max_position_embeddings, "DeBERTa batch: sequence length ", b.seq_len,
                      " exceeds max_position_embeddings ", config_.max_position_embeddings);
    for (std::size_t i = 0; i < total; ++i) {
      check<ValueError>(b.input_ids[i] >= 0 && b.input_ids[i] < config_.vocab_size, "DeBERTa batch: token id ",
                        b.input_ids[i], " at sequence ", Index(i) / b.seq_len, " position ", Index(i) % b.seq_len,
                        " is outside the vocabulary [0, ", config_.vocab_size, ")");
      // HF reads the mask as 1 - mask times the dtype's minimum: any other value is garbage there.
      check<ValueError>(b.attention_mask[i] == 0 || b.attention_mask[i] == 1, "DeBERTa batch: attention_mask value ",
                        b.attention_mask[i], " at sequence ", Index(i) / b.seq_len, " position ",
                        Index(i) % b.seq_len, " is not 0 (padding) or 1 (token)");
      if (config_.type_vocab_size > 0 && !b.token_type_ids.empty())
        check<ValueError>(b.token_type_ids[i] >= 0 && b.token_type_ids[i] < config_.type_vocab_size,
                          "DeBERTa batch: token type ", b.token_type_ids[i], " outside [0, ",
                          config_.type_vocab_size, ")");
    }
  }

  /// out (rows, hidden) = LayerNorm(word + position + type embeddings [embed_proj]) * mask.
  void embed(View out, const TokenBatch& b) {
    const Index rows = b.batch * b.seq_len, embedding = embedding_size();
    const View sum = embedding != config_.hidden_size ? embedded_.rows(rows, embedding) : out;
    B::gather_rows(sum, word_embeddings_.view(), B::make_indices(b.input_ids));
    const auto add_lookup = [&](const Matrix& table, const std::vector<std::int32_t>& ids) {
      const View looked_up = lookup_.rows(rows, embedding);
      B::gather_rows(looked_up, table.view(), B::make_indices(ids));
      B::axpy(sum, 1.0f, looked_up);
    };
    if (config_.position_biased_input) {
      std::vector<std::int32_t> positions(static_cast<std::size_t>(rows));
      for (Index i = 0; i < rows; ++i) positions[std::size_t(i)] = static_cast<std::int32_t>(i % b.seq_len);
      add_lookup(position_embeddings_, positions);
    }
    if (config_.type_vocab_size > 0)
      add_lookup(token_type_embeddings_,
                 b.token_type_ids.empty() ? std::vector<std::int32_t>(std::size_t(rows), 0) : b.token_type_ids);
    if (embedding != config_.hidden_size) {
      const View projected = projected_.rows(rows, config_.hidden_size);
      B::gemm(projected, sum, Op::N, embed_proj_.view(), Op::T, 1.0f, 0.0f);  // (rows, E) -> (rows, hidden)
      embedding_norm_.forward(out, projected);
    } else {
      const View normed = projected_.rows(rows, config_.hidden_size);
      embedding_norm_.forward(normed, sum);
      B::copy(out, normed);
    }
    // Zero padded tokens, one fill per run of padding.
    for (Index i = 0; i < rows;) {
      if (b.attention_mask[std::size_t(i)] != 0) {
        ++i;
        continue;
      }
      Index end = i;
      while (end < rows && b.attention_mask[std::size_t(end)] == 0) ++end;
      B::fill(out.row_block(i, end - i), 0.0f);
      i = end;
    }
  }

  /// Mean squared error of logits (n, 1) against targets; writes its gradient.
  float mse(View d_logits, ConstView logits, const std::vector<float>& targets) {
    const Index n = logits.rows;
    HostMatrix t(n, 1, targets);
    const View target = targets_.rows(n, 1);
    B::upload(target, t.view());
    B::copy(d_logits, logits);
    B::axpy(d_logits, -1.0f, target);
    const double loss = B::sum_squares(d_logits) / static_cast<double>(n);
    B::scale(d_logits, 2.0f / static_cast<float>(n));
    return static_cast<float>(loss);
  }

  using Encoder::batch_, Encoder::cls_rows, Encoder::d_stream_, Encoder::dropout_stream_, Encoder::every_token_,
      Encoder::hidden_, Encoder::inference_holder_, Encoder::layers_, Encoder::tokens_, Encoder::top_token_step,
      Encoder::training_;

  DebertaV2Config config_;
  Matrix word_embeddings_, position_embeddings_, token_type_embeddings_, embed_proj_;
  LayerNorm<B> embedding_norm_;
  Matrix rel_embeddings_;
  LayerNorm<B> rel_norm_;
  TrainableLinear<B> pooler_;
  TrainableLinear<B> classifier_;
  CrossEntropy<B> loss_;
  Dropout<B> embedding_dropout_, classifier_dropout_;
  CopyingDropout<B> pooler_dropout_;  // token 0 stays in the last hidden state

  detail::Scratch<B> embedded_, lookup_;      // (rows, embedding) embedding sums and lookups
  detail::Scratch<B> projected_;              // (rows, hidden) LayerNorm input or output
  detail::Scratch<B> mask_;                   // (batch, tokens) additive key scores
  detail::Scratch<B> rel_normed_;             // (2 span, hidden)
  ConstView rel_;                             // the relative embeddings the last forward used
  detail::Scratch<B> pooled_pre_, pooled_, logits_, targets_;
  detail::Scratch<B> d_logits_, d_pooled_, d_pooled_pre_;
  BackwardScratch<B> scratch_;
  DisentangledScratch<B> attn_;
};

}  // namespace plora
