#pragma once
// Running a stack of encoder layers, keeping every layer's activations for a
// backward pass, or, for inference, one layer's: each layer hands its buffers
// to the next once it is done, and the next pass takes them from the layer
// that ended with them, so it allocates nothing, wherever it starts. The
// backward runs the stack top-down with two residual-stream gradient buffers
// in turn. A classifier on token 0 needs nothing else from the last layer,
// which then computes that token alone.
#include <cstddef>
#include <string_view>
#include <vector>

#include "plora/core/error.hpp"
#include "plora/core/view.hpp"
#include "plora/nn/attention.hpp"
#include "plora/nn/mlp.hpp"

namespace plora::detail {


/// What layer l of `count` computes: token 0 alone in the last layer unless
/// every token is asked for.
inline Queries layer_queries(std::size_t l, std::size_t count, bool every_token) {
  return l + 1 == count && !every_token ? Queries::first_token : Queries::every_token;
}
/// forward_from's checks: `first` is one of the model's `layers` layers and
/// `input` holds that layer's input for a batch of `examples` (named by
/// `example_noun`: "images", "sequences") of `tokens` tokens each,
/// (examples * tokens, hidden).
template <class InputView>
void check_forward_from(std::string_view model, Index first, Index layers, const InputView& input, Index hidden,
                        Index examples, std::string_view example_noun, Index tokens) {
  const Index rows = examples * tokens;
  check<ValueError>(first >= 0 && first < layers, model, " forward_from: layer ", first, " is outside [0, ", layers,
                    ")");
  check<ShapeError>(rows > 0 && input.rows == rows && input.cols == hidden, model, " forward_from: layer ", first,
                    "'s input is ", input.rows, " x ", input.cols, ", expected ", rows, " x ", hidden, " (",
                    examples, " ", example_noun, " of ", tokens, " tokens)");
}

/// Rows between consecutive sequences' token 0 at the top of the stream: 1
/// when the last layer computed token 0 alone, else `tokens` (also when there
/// are no layers and the top is the embeddings).
inline Index top_token_step(std::size_t count, bool every_token, Index tokens) {
  return count == 0 || every_token ? tokens : 1;
}

/// Calls forward_layer(l) for l = first, first + 1, ... in order. Layer
/// needs swap_activations(Layer&) that exchanges forward state, not weights.
/// For inference (Keep::nothing: the stack holds one layer's activations),
/// `holder` is the layer holding the buffers the layers hand along: layer
/// `first` takes them from it, and it becomes the last layer.
template <class Layer, class F>
void forward_layers(std::vector<Layer>& layers, Keep keep, std::size_t first, std::size_t& holder,
                    F&& forward_layer) {
  const bool hand_along = keep == Keep::nothing;
  if (hand_along && first < layers.size() && holder != first) {
    layers[holder].swap_activations(layers[first]);
    holder = first;
  }
  for (std::size_t l = first; l < layers.size(); ++l) {
    forward_layer(l);
    if (hand_along && l + 1 < layers.size()) {
      layers[l].swap_activations(layers[l + 1]);
      holder = l + 1;
    }
  }
}

/// Calls backward_layer(l, dx, dy) for l = last, ..., 0. The gradient at the
/// last layer's output is in d_stream[0] (top_rows, cols: fewer than rows when
/// that layer computed some tokens only); each layer's dx (rows, cols) is the
/// next call's dy, written into the other buffer of the pair. Layer 0 gets an
/// empty dx: the embeddings below it are frozen.
template <class Layer, class Buffers, class F>
void backward_layers(std::vector<Layer>& layers, Buffers& d_stream, Index top_rows, Index rows, Index cols,
                     F&& backward_layer) {
  using View = decltype(d_stream[0].rows(rows, cols));
  View dy = d_stream[0].rows(top_rows, cols);
  for (std::size_t l = layers.size(); l-- > 0;) {
    const View dx = l == 0 ? View{} : d_stream[(layers.size() - l) % 2].rows(rows, cols);
    backward_layer(l, dx, dy);
    dy = dx;
  }
}

}  // namespace plora::detail
