#pragma once
// The Model concept: what the trainer and the ratio extractors need of a model.
//
//   forward(batch)            -> logits (batch x classes) in the backend's memory,
//                                valid until the next forward; eval or train mode
//   forward_backward(batch)   -> mean loss; fills the gradients of parameters()
//   parameters()              the trainable tensors (adapters + head)
//   zero_grad()
//   set_training(bool)        dropout on/off
//   site_names()              adaptable linear sites, PEFT-style full names
//   site(name)                the LinearSite (to attach adapters, override W, ask dL/dW)
//
// LayeredModel adds what lets the ratio extractors rerun the layers above a
// pruned weight only.
#include <concepts>
#include <string>
#include <vector>

#include "plora/backend/concepts.hpp"
#include "plora/core/parameter.hpp"

namespace plora {

template <class M>
concept Model = Backend<typename M::BackendType> &&
                requires(M& m, const typename M::Batch& batch, const std::string& name, bool flag) {
                  { m.forward(batch) } -> std::convertible_to<ConstView<typename M::BackendType::Space>>;
                  { m.forward_backward(batch) } -> std::convertible_to<float>;
                  { m.parameters() } -> std::same_as<ParameterList<typename M::BackendType::Space>>;
                  m.zero_grad();
                  m.set_training(flag);
                  { m.site_names() } -> std::same_as<std::vector<std::string>>;
                  m.site(name);
                };

/// A Model whose inference forward can start at an encoder layer from that
/// layer's input, as the ratio extractors use it: a probe of a weight in layer
/// l reruns layers l.. only, from inputs computed once.
///   layer_of(site)                the encoder layer holding the site
///   hidden_state(l)               layer l's input, after a forward
///   forward_from(l, input, batch) forward(batch)'s logits, `input` being
///                                 hidden_state(l) of that batch's forward
template <class M>
concept LayeredModel =
    Model<M> && requires(M& m, const M& cm, const typename M::Batch& batch, const std::string& name, Index layer,
                         ConstView<typename M::BackendType::Space> input) {
      { cm.layer_of(name) } -> std::convertible_to<Index>;
      { cm.hidden_state(layer) } -> std::convertible_to<ConstView<typename M::BackendType::Space>>;
      { m.forward_from(layer, input, batch) } -> std::convertible_to<ConstView<typename M::BackendType::Space>>;
    };

}  // namespace plora
