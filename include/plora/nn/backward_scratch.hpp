#pragma once
// Gradient temporaries shared by every layer of a model. A layer's backward
// uses them only until it returns, so one set serves all layers (llm.c keeps
// one grad-activation arena the same way); forward activations, which backward
// needs later, stay in each layer. Windows grow to the largest shape seen and
// are reused, so repeated steps allocate nothing.
#include "plora/backend/scratch.hpp"
#include "plora/backend/concepts.hpp"

namespace plora {

/// @tparam B  backend owning the buffers
template <Backend B>
struct BackwardScratch {
  detail::Scratch<B> d_normed;  // d(LayerNorm output) (tokens, hidden)
  detail::Scratch<B> d_hidden;  // d(residual stream) inside a layer (tokens, hidden)
  detail::Scratch<B> d_query, d_key, d_value, d_context;  // (tokens, hidden)
  detail::Scratch<B> d_scores;  // d(attention probabilities), then d(scores) (batch * heads * tokens, tokens)
  detail::Scratch<B> d_activation, d_preactivation;       // MLP (tokens, intermediate)
  detail::Scratch<B> d_branch;  // a residual branch's grad behind its dropout (tokens, hidden)
};

}  // namespace plora
