#pragma once
// A trainable tensor as the optimizer sees it: its value, its gradient and a
// PEFT-style name (e.g. "encoder.layer.0.attention.attention.query.lora_A").
#include <string>
#include <vector>

#include "plora/core/view.hpp"

namespace plora {

template <class Space>
struct Parameter {
  std::string name;
  View<Space> value;
  View<Space> grad;
};

template <class Space>
using ParameterList = std::vector<Parameter<Space>>;

/// Prefixes every parameter name with `prefix + "."` and appends them to `out`.
template <class Space>
void append_parameters(ParameterList<Space>& out, const std::string& prefix, ParameterList<Space> params) {
  for (auto& p : params) {
    p.name = prefix.empty() ? p.name : prefix + "." + p.name;
    out.push_back(std::move(p));
  }
}

}  // namespace plora
