#pragma once
// Running a stack of encoder layers, keeping every layer's activations for a
// backward pass, or, for inference, one layer's: each layer hands its buffers
// to the next once it is done (the last hands them back to the first, so the
// next pass allocates nothing). The backward runs the stack top-down with two
// residual-stream gradient buffers in turn. A classifier on token 0 needs
// nothing else from the last layer, which then computes that token alone.
#include <cstddef>
#include <vector>

#include "plora/core/view.hpp"
#include "plora/nn/attention.hpp"

namespace plora::detail {

enum class Activations { every_layer, one_layer };

/// What layer l of `count` computes: token 0 alone in the last layer unless
/// every token is asked for.
inline Queries layer_queries(std::size_t l, std::size_t count, bool every_token) {
  return l + 1 == count && !every_token ? Queries::first_token : Queries::every_token;
}
/// Rows between consecutive sequences' token 0 at the top of the stream: 1
/// when the last layer computed token 0 alone, else `tokens` (also when there
/// are no layers and the top is the embeddings).
inline Index top_token_step(std::size_t count, bool every_token, Index tokens) {
  return count == 0 || every_token ? tokens : 1;
}

/// Calls forward_layer(l) for l = 0, 1, ... in order. Layer needs
/// swap_activations(Layer&) that exchanges forward state, not weights.
template <class Layer, class F>
void forward_layers(std::vector<Layer>& layers, Activations kept, F&& forward_layer) {
  for (std::size_t l = 0; l < layers.size(); ++l) {
    forward_layer(l);
    if (kept == Activations::one_layer && layers.size() > 1)
      layers[l].swap_activations(layers[(l + 1) % layers.size()]);
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
