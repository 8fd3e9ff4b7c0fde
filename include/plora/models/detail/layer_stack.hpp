#pragma once
// Running a stack of encoder layers, keeping every layer's activations for a
// backward pass, or, for inference, one layer's: each layer hands its buffers
// to the next once it is done (the last hands them back to the first, so the
// next pass allocates nothing).
#include <cstddef>
#include <vector>

namespace plora::detail {

enum class Activations { every_layer, one_layer };

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

}  // namespace plora::detail
