#pragma once
// transformers' ViTForImageClassification (REFERENCE.md §1) with adaptable
// linear sites: patch + CLS + position embeddings, pre-LN encoder layers
//   h = x + O(Attn(LN_before(x))),   y = h + W2 gelu(W1 LN_after(h)),
// the final vit.layernorm on token 0 only (the other tokens' normalised values
// are never used), and a trainable classifier on it. No pooler. As the head
// reads token 0 alone, the last layer computes only token 0's output (its keys
// and values still see every token): the same logits and gradients for about
// 1/L less work; set_every_token(true) computes every token there. In training
// (set_training(true)) the embeddings, the attention probabilities and both
// residual branches pass through transformers' dropouts (hidden_dropout_prob,
// attention_probs_dropout_prob; 0 in the Hub's ViTs), drawn from
// dropout_stream(); like a model from from_pretrained, a new model evaluates.
//
// Site names are the full PEFT module paths of a Hub checkpoint, "vit."
// included: "vit.encoder.layer.3.attention.attention.query". A PEFT adapter
// file stores "base_model.model." + name + ".lora_A.weight", and the head's
// parameters are "classifier.weight" / "classifier.bias" as in PEFT's
// modules_to_save. (transformers >= 5 renames these modules in memory, e.g.
// "vit.layers.3.attention.q_proj", but still saves the Hub names.)
#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "plora/backend/scratch.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/core/finite.hpp"
#include "plora/core/host_matrix.hpp"
#include "plora/core/parameter.hpp"
#include "plora/core/rng.hpp"
#include "plora/models/batches.hpp"
#include "plora/models/detail/encoder_model.hpp"
#include "plora/models/detail/layer_stack.hpp"
#include "plora/models/vit_config.hpp"
#include "plora/models/weight_source.hpp"
#include "plora/nn/attention.hpp"
#include "plora/nn/backward_scratch.hpp"
#include "plora/nn/cross_entropy.hpp"
#include "plora/nn/dropout.hpp"
#include "plora/nn/layernorm.hpp"
#include "plora/nn/linear_site.hpp"
#include "plora/nn/mlp.hpp"
#include "plora/nn/trainable_linear.hpp"
#include "plora/nn/vit_embeddings.hpp"

namespace plora {

/// One pre-LN ViT encoder layer (transformers' ViTLayer).
/// @tparam B  backend
/// @tparam A  adapter type its six sites may carry
template <Backend B, Adapter A>
class VitLayer {
 public:
  using Site = LinearSite<B, A>;
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  /// Site suffixes in the order site_names() lists them.
  static constexpr std::array<std::string_view, 6> kSites = {
      "attention.attention.query", "attention.attention.key", "attention.attention.value",
      "attention.output.dense",    "intermediate.dense",      "output.dense"};

  /// hidden_dropout: on both residual branches in training (hidden_dropout_prob).
  VitLayer(LayerNorm<B> before, SelfAttention<B, A> attention, LayerNorm<B> after, Mlp<B, A> mlp,
           float hidden_dropout)
      : before_(std::move(before)), attention_(std::move(attention)), after_(std::move(after)),
        mlp_(std::move(mlp)), attention_dropout_(hidden_dropout), output_dropout_(hidden_dropout) {}

  [[nodiscard]] static bool has_site(std::string_view suffix) {
    return std::find(kSites.begin(), kSites.end(), suffix) != kSites.end();
  }
  /// The site with one of the kSites suffixes.
  [[nodiscard]] Site& site(std::string_view suffix) {
    if (suffix == kSites[0]) return attention_.query();
    if (suffix == kSites[1]) return attention_.key();
    if (suffix == kSites[2]) return attention_.value();
    if (suffix == kSites[3]) return attention_.output();
    if (suffix == kSites[4]) return mlp_.intermediate();
    check<ValueError>(suffix == kSites[5], "ViT layer has no site '", suffix, "'");
    return mlp_.output();
  }

  /// y from x (rows, hidden), rows = batch * tokens: (rows, hidden) for
  /// every token, (batch, hidden) for the first token of each image only
  /// (everything above the keys and values then runs on those rows). With a
  /// `dropout` stream (training) the dropouts draw from it. `keep` as Mlp takes it.
  void forward(View y, ConstView x, Index tokens, RandomStream* dropout, Queries queries = Queries::every_token,
               Keep keep = Keep::for_backward) {
    const Index rows = x.rows, hidden = x.cols;
    token_step_ = query_step(queries, tokens);
    const Index out_rows = rows / token_step_;
    const View normed_before = normed_before_.rows(rows, hidden), h = h_.rows(out_rows, hidden);
    const View normed_after = normed_after_.rows(out_rows, hidden);
    const ConstView x_rows = x.every_nth_row(token_step_);
    before_.forward(normed_before, x);
    attention_.forward(h, normed_before, tokens, {}, dropout, queries,
                       attention_dropout_.residual_to_fuse(x_rows, dropout));
    attention_dropout_.forward_and_add(h, dropout, x_rows);  // h = x + dropout(attention)
    after_.forward(normed_after, h);
    mlp_.forward(y, normed_after, output_dropout_.residual_to_fuse(h, dropout), keep);
    output_dropout_.forward_and_add(y, dropout, h);  // y = h + dropout(mlp)
  }

  /// dx (rows, hidden) from dy (as the forward's y) and the forward input x;
  /// an empty dx skips everything below the sites (the first layer's input is frozen).
  void backward(View dx, ConstView dy, ConstView x, BackwardScratch<B>& scratch) {
    const Index rows = x.rows, out_rows = rows / token_step_, hidden = x.cols;
    const View d_normed = scratch.d_normed.rows(rows, hidden), dh = scratch.d_hidden.rows(out_rows, hidden);
    const View d_branch = scratch.d_branch.rows(out_rows, hidden);
    const View d_normed_after = d_normed.row_block(0, out_rows);
    mlp_.backward(d_normed_after, output_dropout_.backward(d_branch, dy), normed_after_.rows(out_rows), scratch);
    after_.backward(dh, d_normed_after, h_.rows(out_rows));
    B::axpy(dh, 1.0f, dy);
    attention_.backward(dx.empty() ? View{} : d_normed, attention_dropout_.backward(d_branch, dh),
                        normed_before_.rows(rows), scratch);
    if (dx.empty()) return;
    before_.backward(dx, d_normed, x);
    B::axpy(dx.every_nth_row(token_step_), 1.0f, dh);
  }

  /// Exchanges the forward state (not the weights) with another layer.
  void swap_activations(VitLayer& other) noexcept {
    before_.swap_activations(other.before_);
    attention_.swap_activations(other.attention_);
    after_.swap_activations(other.after_);
    mlp_.swap_activations(other.mlp_);
    std::swap(normed_before_, other.normed_before_);
    std::swap(h_, other.h_);
    std::swap(normed_after_, other.normed_after_);
    std::swap(token_step_, other.token_step_);
    attention_dropout_.swap_activations(other.attention_dropout_);
    output_dropout_.swap_activations(other.output_dropout_);
  }

 private:
  LayerNorm<B> before_;
  SelfAttention<B, A> attention_;
  LayerNorm<B> after_;
  Mlp<B, A> mlp_;
  Index token_step_ = 1;  // 1, or tokens when the last forward computed first tokens only
  detail::Scratch<B> normed_before_;         // (rows, hidden)
  detail::Scratch<B> h_, normed_after_;      // (rows / token_step_, hidden) each
  Dropout<B> attention_dropout_, output_dropout_;        // on the two residual branches
};

/// ViTForImageClassification on backend B with adapters of type A.
/// forward_backward() accumulates gradients (call zero_grad() between steps).
/// @tparam B  backend
/// @tparam A  adapter type attachable to every site
template <Backend B, Adapter A>
class Vit : public detail::EncoderModel<B, A, VitLayer<B, A>> {
  using Encoder = detail::EncoderModel<B, A, VitLayer<B, A>>;

 public:
  using BackendType = B;
  using Batch = ImageBatch;
  using Site = typename Encoder::Site;
  using Matrix = typename B::Matrix;
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  static constexpr std::string_view kLayerPrefix = "vit.encoder.layer.";

  /// Builds the model from `weights` under the Hub keys ("vit.embeddings...",
  /// "vit.encoder.layer.<i>...", "vit.layernorm...", "classifier...").
  /// Every backbone tensor must be present (IoError naming the key otherwise);
  /// a classifier the source lacks is drawn like transformers' init (N(0,
  /// 0.02) weight from stream (seed, "classifier.weight"), zero bias).
  /// Throws ValueError for an unsupported config and ShapeError naming the key
  /// whose tensor disagrees with it. `seed` also seeds dropout_stream().
  Vit(const ViTConfig& config, const WeightSource& weights, std::uint64_t seed = 0)
      : Encoder("ViT", kLayerPrefix, RandomStream(seed, stream_id("vit.dropout"))), config_(validated(config)) {
    const Index hidden = config_.hidden_size, inner = config_.intermediate_size;
    const auto load = [&](const std::string& key, Index rows, Index cols) {
      return detail::required_weight<B>(weights, "ViT", key, rows, cols);
    };
    // Tensors load one statement at a time, in checkpoint order, so the first
    // bad key is the one reported (argument evaluation order is unspecified).
    const Index patch_features = config_.num_channels * config_.patch_size * config_.patch_size;
    Matrix patch_weight = load("vit.embeddings.patch_embeddings.projection.weight", hidden, patch_features);
    Matrix patch_bias = load("vit.embeddings.patch_embeddings.projection.bias", 1, hidden);
    PatchEmbedding<B> patch(std::move(patch_weight), std::move(patch_bias), config_.num_channels, config_.image_size,
                            config_.patch_size);
    Matrix cls = load("vit.embeddings.cls_token", 1, hidden);
    Matrix positions = load("vit.embeddings.position_embeddings", 1 + patch.patches(), hidden);
    embeddings_ = VitEmbeddings<B>(std::move(patch), std::move(cls), std::move(positions));

    const auto layernorm = [&](const std::string& key) {
      Matrix gamma = load(key + ".weight", 1, hidden);
      Matrix beta = load(key + ".bias", 1, hidden);
      return LayerNorm<B>(key, std::move(gamma), std::move(beta), config_.layer_norm_eps);
    };
    const auto site = [&](const std::string& key, Index out, Index in, bool bias) {
      Matrix weight = load(key + ".weight", out, in);
      return Site(key, std::move(weight), bias ? load(key + ".bias", 1, out) : Matrix());
    };
    // No reserve(num_hidden_layers): a corrupt count must fail at the first
    // layer the weights lack, not size an allocation.
    for (Index i = 0; i < config_.num_hidden_layers; ++i) {
      const std::string p = std::string(kLayerPrefix) + std::to_string(i) + ".";
      const auto name = [&](std::size_t s) { return p + std::string(VitLayer<B, A>::kSites[s]); };
      Site query = site(name(0), hidden, hidden, config_.qkv_bias);
      Site key = site(name(1), hidden, hidden, config_.qkv_bias);
      Site value = site(name(2), hidden, hidden, config_.qkv_bias);
      Site attention_output = site(name(3), hidden, hidden, true);
      SelfAttention<B, A> attention(std::move(query), std::move(key), std::move(value), std::move(attention_output),
                                    config_.num_attention_heads, config_.attention_probs_dropout_prob);
      Site intermediate = site(name(4), inner, hidden, true);
      Site output = site(name(5), hidden, inner, true);
      LayerNorm<B> before = layernorm(p + "layernorm_before");
      LayerNorm<B> after = layernorm(p + "layernorm_after");
      layers_.emplace_back(std::move(before), std::move(attention), std::move(after),
                           Mlp<B, A>(std::move(intermediate), std::move(output)), config_.hidden_dropout_prob);
    }
    final_norm_ = layernorm("vit.layernorm");
    // Streams are named by the weight's key here (DeBERTa's by the module's), as ViT's new heads always were.
    classifier_ = detail::linear_head<B>(weights, "ViT", "classifier", config_.num_labels, hidden,
                                         RandomStream(seed, stream_id("classifier.weight")));
    embedding_dropout_ = Dropout<B>(config_.hidden_dropout_prob);
    this->size_hidden_states();
  }

  [[nodiscard]] const ViTConfig& config() const { return config_; }
  /// Tokens per image: CLS + patches.
  [[nodiscard]] Index tokens() const { return embeddings_.tokens(); }
  [[nodiscard]] TrainableLinear<B>& classifier() { return classifier_; }

  /// logits (batch, num_labels), valid until the next forward. An inference
  /// pass: the layers hand one set of activation buffers along, so memory
  /// holds one layer's activations rather than every layer's.
  ConstView forward(const ImageBatch& batch) { return forward_pass(batch, Keep::nothing); }
  /// forward(batch)'s logits from layer `first` on (LayeredModel): `input` is
  /// hidden_state(first) of a forward of `batch` with the same weights below
  /// that layer, (batch * tokens, hidden). The ratio extractors' probes of a
  /// weight in layer l rerun layers l.. only.
  ConstView forward_from(Index first, ConstView input, const ImageBatch& batch) {
    detail::check_forward_from("ViT", first, config_.num_hidden_layers, input, config_.hidden_size, batch.size(),
                               "images", tokens());
    return forward_pass(batch, Keep::nothing, static_cast<std::size_t>(first), input);
  }
  /// Mean cross-entropy of the batch; adds its gradients to parameters().
  float forward_backward(const ImageBatch& batch) {
    check<ShapeError>(static_cast<Index>(batch.labels.size()) == batch.size(), "ViT batch: ", batch.labels.size(),
                      " labels for ", batch.size(), " images");
    const ConstView logits = forward_pass(batch, Keep::for_backward);
    const Index n = batch_, tokens = this->tokens(), hidden = config_.hidden_size, rows = n * tokens;
    const View d_logits = d_logits_.rows(n, config_.num_labels);
    const float loss = loss_.forward_backward(d_logits, logits, batch.labels);
    const View d_cls = d_cls_.rows(n, hidden);
    classifier_.backward(d_cls, d_logits, cls_normed_.rows(n));

    const Index top_rows = n * top_token_step();
    const View d_top = d_stream_[0].rows(top_rows, hidden);
    if (top_rows != n) B::fill(d_top, 0.0f);  // only token 0 reaches the head
    final_norm_.backward(cls_rows(d_top), d_cls, cls_rows(hidden_.back().rows(top_rows)));
    detail::backward_layers(layers_, d_stream_, top_rows, rows, hidden, [&](std::size_t l, View dx, ConstView dy) {
      layers_[l].backward(dx, dy, hidden_[l].rows(rows), scratch_);
    });
    return loss;
  }

  /// Trainable tensors: every attached adapter's (named "<site>.<param>"), then
  /// "classifier.weight" and "classifier.bias".
  [[nodiscard]] ParameterList<typename B::Space> parameters() {
    ParameterList<typename B::Space> out = this->adapter_parameters();
    append_parameters(out, classifier_.name(), classifier_.parameters());
    return out;
  }
  void zero_grad() {
    this->zero_adapter_grads();
    classifier_.zero_grad();
  }

 private:
  static ViTConfig validated(const ViTConfig& c) {
    check<ValueError>(c.hidden_size > 0 && c.num_hidden_layers >= 0 && c.num_attention_heads > 0 &&
                          c.intermediate_size > 0 && c.num_channels > 0 && c.num_labels > 0,
                      "ViT config: sizes must be positive (hidden_size ", c.hidden_size, ", num_hidden_layers ",
                      c.num_hidden_layers, ", num_attention_heads ", c.num_attention_heads, ", intermediate_size ",
                      c.intermediate_size, ", num_channels ", c.num_channels, ", num_labels ", c.num_labels, ")");
    check<ValueError>(c.hidden_size % c.num_attention_heads == 0, "ViT config: hidden_size ", c.hidden_size,
                      " is not divisible by num_attention_heads ", c.num_attention_heads);
    check<ValueError>(c.patch_size > 0 && c.image_size > 0 && c.image_size % c.patch_size == 0,
                      "ViT config: image_size ", c.image_size, " is not a positive multiple of patch_size ",
                      c.patch_size);
    check<ValueError>(c.hidden_act == "gelu", "ViT config: hidden_act '", c.hidden_act,
                      "' is not supported (only the exact erf \"gelu\")");
    check<ValueError>(c.layer_norm_eps > 0.0f, "ViT config: layer_norm_eps ", c.layer_norm_eps, " must be > 0");
    for (const auto& [key, p] : {std::pair{"hidden_dropout_prob", c.hidden_dropout_prob},
                                 {"attention_probs_dropout_prob", c.attention_probs_dropout_prob}})
      check<ValueError>(p >= 0.0f && p < 1.0f, "ViT config: ", key, " ", p, " is outside [0, 1)");
    return c;
  }

  /// forward(), forward_from() and forward_backward()'s pass from layer
  /// `first`, whose input is `input` or else the pixels' embeddings; `keep`
  /// says whether every layer keeps its activations for a backward.
  ConstView forward_pass(const ImageBatch& batch, Keep keep, std::size_t first = 0,
                         ConstView input = {}) {
    const Index n = batch.size(), tokens = this->tokens(), hidden = config_.hidden_size;
    check<ShapeError>(n > 0, "ViT forward: empty batch");
    if (input.empty()) {  // the pixels are the pass's input
      const auto& pixels = batch.pixels.values();
      const std::size_t bad = first_non_finite(pixels);
      check<ValueError>(bad == pixels.size(), "ViT forward: pixel ", bad, " of image ",
                        Index(bad) / std::max<Index>(1, batch.pixels.cols()), " is ",
                        bad < pixels.size() ? pixels[bad] : 0.0f);
    }
    batch_ = n;
    tokens_ = tokens;
    RandomStream* const dropout = training_ ? &dropout_stream_ : nullptr;
    const View stream_in = hidden_[first].rows(n * tokens, hidden);
    if (input.empty()) {
      const View pixels = pixels_.rows(n, batch.pixels.cols());
      B::upload(pixels, batch.pixels.view());
      embeddings_.forward(stream_in, pixels);
      embedding_dropout_.forward(stream_in, dropout);  // frozen embeddings: no backward
    } else if (input.data != stream_in.data) {
      B::copy(stream_in, input);
    }
    detail::forward_layers(layers_, keep, first, inference_holder_, [&](std::size_t l) {
      const Queries queries = detail::layer_queries(l, layers_.size(), every_token_);
      const Index out_rows = n * tokens / query_step(queries, tokens);
      layers_[l].forward(hidden_[l + 1].rows(out_rows, hidden), hidden_[l].rows(n * tokens), tokens, dropout, queries,
                         keep);
    });
    const View cls_normed = cls_normed_.rows(n, hidden);
    final_norm_.forward(cls_normed, cls_rows(hidden_.back().rows(n * top_token_step())));
    const View logits = logits_.rows(n, config_.num_labels);
    classifier_.forward(logits, cls_normed);
    return logits;
  }

  using Encoder::batch_, Encoder::cls_rows, Encoder::d_stream_, Encoder::dropout_stream_, Encoder::every_token_,
      Encoder::hidden_, Encoder::inference_holder_, Encoder::layers_, Encoder::tokens_, Encoder::top_token_step,
      Encoder::training_;

  ViTConfig config_;
  VitEmbeddings<B> embeddings_;
  LayerNorm<B> final_norm_;
  TrainableLinear<B> classifier_;
  CrossEntropy<B> loss_;
  Dropout<B> embedding_dropout_;

  detail::Scratch<B> pixels_;                 // (batch, C S S)
  detail::Scratch<B> cls_normed_, logits_;    // (batch, hidden), (batch, labels)
  detail::Scratch<B> d_logits_, d_cls_;       // gradients of the two
  BackwardScratch<B> scratch_;
};

}  // namespace plora
