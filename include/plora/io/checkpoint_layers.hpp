#pragma once
// Hub checkpoints name encoder layers "<prefix>encoder.layer.<i>.<rest>". The
// models read layers 0 .. num_hidden_layers - 1 and ignore other tensors, so a
// config.json whose num_hidden_layers is below the checkpoint's would drop its
// upper layers unseen: this check refuses that.
#include <string>
#include <string_view>

#include "plora/core/decimal.hpp"
#include "plora/core/error.hpp"
#include "plora/io/safetensors.hpp"

namespace plora::io {

/// Throws IoError naming `file` and the first tensor of an encoder layer at
/// or above `layers`.
inline void check_no_layers_beyond(const SafetensorsFile& weights, Index layers, const std::string& file) {
  constexpr std::string_view marker = "encoder.layer.";
  for (const std::string& name : weights.names()) {
    const std::size_t at = name.find(marker);
    if (at == std::string::npos) continue;
    const std::size_t begin = at + marker.size(), end = name.find('.', begin);
    const auto layer = plora::detail::parse_index(std::string_view(name).substr(begin, end - begin));
    check<IoError>(!layer || *layer < layers, "'", file, "' holds '", name, "' of encoder layer ", layer.value_or(0),
                   ", but the config has num_hidden_layers ", layers, " (layers 0..", layers - 1, ")");
  }
}

}  // namespace plora::io
