#pragma once
// What ViT and DeBERTa-v2 share around their stack of encoder layers: the
// layers and their adaptable sites by name, the residual stream of the last
// pass (hidden states, and the backward's stream gradients), the dropout
// stream, and the training and every-token switches. Each model derives from
// EncoderModel and adds its embeddings, its head and the passes through them.
#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "plora/adapters/concepts.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/backend/scratch.hpp"
#include "plora/core/error.hpp"
#include "plora/core/parameter.hpp"
#include "plora/core/rng.hpp"
#include "plora/models/detail/layer_sites.hpp"
#include "plora/models/detail/layer_stack.hpp"
#include "plora/nn/linear_site.hpp"

namespace plora::detail {

/// @tparam B      backend
/// @tparam A      adapter type attachable to every site
/// @tparam Layer  the model's encoder layer (Layer::kSites, has_site, site)
template <Backend B, Adapter A, class Layer>
class EncoderModel {
 public:
  using Site = LinearSite<B, A>;
  using ConstView = plora::ConstView<typename B::Space>;

  /// Switches the model's dropouts and the adapters'.
  void set_training(bool training) {
    training_ = training;
    for_each_site([&](Site& s) {
      if (s.has_adapter()) s.adapter().set_training(training);
    });
  }
  /// The stream every model dropout draws from (seeded by the model's
  /// constructor); its offset is the state a checkpoint saves (Trainer::track_stream).
  [[nodiscard]] RandomStream& dropout_stream() { return dropout_stream_; }

  /// Every adaptable site, layer by layer in Layer::kSites order.
  [[nodiscard]] std::vector<std::string> site_names() const { return layer_site_names(layers_, layer_prefix_); }
  /// The site named "<layer prefix><i>.<suffix>"; ValueError for other names.
  [[nodiscard]] Site& site(const std::string& name) { return find_layer_site(layers_, name, layer_prefix_, model_); }
  /// The encoder layer holding site `name` (ValueError for other names).
  [[nodiscard]] Index layer_of(const std::string& name) const {
    return checked_layer_site_name(layers_, name, layer_prefix_, model_).layer;
  }

  /// Whether the last layer computes every token's output (for
  /// hidden_state(number of layers)) or, by default, token 0's alone.
  void set_every_token(bool every_token) { every_token_ = every_token; }

  /// Hidden state i of the last forward, (batch * tokens, hidden): i = 0 the
  /// embeddings, i = l + 1 the output of layer l, as transformers'
  /// output_hidden_states (ViT's before its final LayerNorm). The last
  /// layer's is (batch, hidden), token 0 of each example, unless
  /// set_every_token(true).
  [[nodiscard]] ConstView hidden_state(Index i) const {
    check<ValueError>(i >= 0 && i < static_cast<Index>(hidden_.size()), model_, " hidden state ", i,
                      " is outside [0, ", hidden_.size(), ")");
    const bool top = i + 1 == static_cast<Index>(hidden_.size());
    return hidden_[static_cast<std::size_t>(i)].rows(batch_ * (top ? top_token_step() : tokens_));
  }

 protected:
  /// `model` names the model in errors; sites are named "<layer_prefix><i>.<suffix>".
  EncoderModel(std::string_view model, std::string_view layer_prefix, RandomStream dropout_stream)
      : model_(model), layer_prefix_(layer_prefix), dropout_stream_(dropout_stream) {}

  /// Every attached adapter's tensors, named "<site>.<param>": the start of
  /// the model's parameters(), before its head's.
  [[nodiscard]] ParameterList<typename B::Space> adapter_parameters() {
    ParameterList<typename B::Space> out;
    for_each_site([&](Site& s) {
      if (s.has_adapter()) append_parameters(out, s.name(), s.adapter().parameters());
    });
    return out;
  }
  void zero_adapter_grads() {
    for_each_site([](Site& s) {
      if (s.has_adapter()) s.adapter().zero_grad();
    });
  }
  template <class F>
  void for_each_site(F&& f) {
    for_each_layer_site(layers_, std::forward<F>(f));
  }

  /// Called once the constructor has built the layers: one hidden state per
  /// layer output, plus the embeddings.
  void size_hidden_states() { hidden_.resize(layers_.size() + 1); }

  /// Rows between consecutive examples' token 0 at the top of the stream.
  [[nodiscard]] Index top_token_step() const { return detail::top_token_step(layers_.size(), every_token_, tokens_); }
  /// Token 0 of every example in the top of the stream: (batch, hidden).
  template <class T>
  [[nodiscard]] MatrixView<T, typename B::Space> cls_rows(MatrixView<T, typename B::Space> top) const {
    return top.every_nth_row(top_token_step());
  }

  std::string_view model_;
  std::string_view layer_prefix_;
  std::vector<Layer> layers_;
  RandomStream dropout_stream_;
  bool training_ = false;
  bool every_token_ = false;  // the last layer's outputs: every token's, or token 0's
  Index batch_ = 0;           // examples in the last forward
  Index tokens_ = 0;          // tokens of each
  std::size_t inference_holder_ = 0;  // the layer holding the inference pass's activation buffers
  std::vector<Scratch<B>> hidden_;         // layers + 1 of (batch * tokens, hidden)
  std::array<Scratch<B>, 2> d_stream_;     // residual-stream gradients, alternating by layer
};

}  // namespace plora::detail
