#pragma once
// Per-parameter optimizer buffers keyed by parameter name, allocated on a
// parameter's first step, with host export/import (shared by AdamW and SGD).
#include <array>
#include <cstddef>
#include <map>
#include <string>
#include <string_view>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/core/parameter.hpp"
#include "plora/train/optimizer_concepts.hpp"

namespace plora::detail {

/// @tparam B  backend holding the buffers
/// @tparam N  buffers per parameter, named by `suffixes` ("exp_avg", ...)
template <Backend B, std::size_t N>
class NamedBuffers {
 public:
  using Matrix = typename B::Matrix;
  using Buffers = std::array<Matrix, N>;

  NamedBuffers(std::string_view optimizer, std::array<std::string_view, N> suffixes)
      : optimizer_(optimizer), suffixes_(suffixes) {}

  [[nodiscard]] const std::string& optimizer() const { return optimizer_; }

  /// The buffers of `param` (zero-filled when new) and whether they are new;
  /// imported buffers of the wrong shape throw a ShapeError naming the parameter.
  std::pair<Buffers&, bool> get(const Parameter<typename B::Space>& param) {
    const auto [it, created] = buffers_.try_emplace(param.name);
    if (created) {
      for (auto& buffer : it->second) buffer = Matrix(param.value.rows, param.value.cols);
    }
    for (std::size_t i = 0; i < N; ++i)
      require_shape(it->second[i].view(), param.value.rows, param.value.cols,
                    concat(optimizer_, " state '", param.name, ".", suffixes_[i], "'"));
    return {it->second, created};
  }

  void clear() { buffers_.clear(); }

  void export_to(OptimizerState& state) const {
    for (const auto& [name, buffers] : buffers_)
      for (std::size_t i = 0; i < N; ++i)
        state.tensors.emplace(name + "." + std::string(suffixes_[i]), to_host<B>(buffers[i].view()));
  }

  /// Replaces all buffers by those of `state`, kept for `params`: every
  /// tensor must be "<name>.<suffix>" of a parameter in `params`, at its
  /// shape, and, if `expected`, every parameter must have all N buffers
  /// (else none may be there). Throws before changing anything.
  void import_from(const OptimizerState& state, const ParameterList<typename B::Space>& params, bool expected) {
    std::map<std::string, const Parameter<typename B::Space>*> by_name;
    for (const auto& param : params) by_name.emplace(param.name, &param);
    std::map<std::string, std::array<const HostMatrix*, N>> found;
    for (const auto& [key, tensor] : state.tensors) {
      check<ValueError>(expected, optimizer_, ": state tensor '", key, "' where none is kept (step ", state.step,
                        ")");
      const std::size_t dot = key.rfind('.');
      const std::string_view suffix =
          dot == std::string::npos ? std::string_view{} : std::string_view(key).substr(dot + 1);
      std::size_t slot = N;
      for (std::size_t i = 0; i < N; ++i)
        if (suffix == suffixes_[i]) slot = i;
      check<ValueError>(slot < N, optimizer_, ": state tensor '", key, "' is not a buffer this optimizer keeps");
      const auto param = by_name.find(key.substr(0, dot));
      check<ValueError>(param != by_name.end(), optimizer_, ": state tensor '", key,
                        "' belongs to no parameter being trained");
      require_shape(tensor.view(), param->second->value.rows, param->second->value.cols,
                    concat(optimizer_, " state '", key, "'"));
      found[param->first][slot] = &tensor;
    }
    if (expected)
      for (const auto& param : params)
        for (std::size_t i = 0; i < N; ++i) {
          const auto it = found.find(param.name);
          check<ValueError>(it != found.end() && it->second[i] != nullptr, optimizer_, ": state of '", param.name,
                            "' lacks its '", suffixes_[i], "' buffer");
        }
    std::map<std::string, Buffers> loaded;
    for (const auto& [name, tensors] : found)
      for (std::size_t i = 0; i < N; ++i) loaded[name][i] = to_backend<B>(tensors[i]->view());
    buffers_ = std::move(loaded);
  }

 private:
  std::string optimizer_;
  std::array<std::string_view, N> suffixes_;
  std::map<std::string, Buffers> buffers_;
};

}  // namespace plora::detail
