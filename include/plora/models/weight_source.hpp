#pragma once
// Where a model's frozen weights come from (a checkpoint file, a fixture, a
// demo's initialisation), and the rules every model applies to them: a
// backbone tensor must be there in the shape the config asks for; a head
// tensor the source lacks is drawn like transformers' _init_weights.
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/core/host_matrix.hpp"
#include "plora/core/rng.hpp"
#include "plora/nn/trainable_linear.hpp"

namespace plora {

/// The tensor stored under a Hugging Face key as a (rows x cols) row-major
/// matrix (conv weights and [1, n, d] embeddings reshaped, 1-D vectors as
/// 1 x n), or nullopt when the source has none. A source may also throw,
/// naming its file. A callable returning HostMatrix converts to it.
using WeightSource = std::function<std::optional<HostMatrix>(const std::string& hf_key, Index rows, Index cols)>;

/// Which task head a checkpoint's weight source hands to a model: the
/// checkpoint's (when it has one), or none, so the model draws a new one.
enum class Head { FromCheckpoint, New };

namespace detail {

/// `key` from `weights`, checked against the (rows x cols) the config asks
/// for (ShapeError naming `model` and the key), or nullopt when absent.
inline std::optional<HostMatrix> shaped_weight(const WeightSource& weights, std::string_view model,
                                               const std::string& key, Index rows, Index cols) {
  std::optional<HostMatrix> m = weights(key, rows, cols);
  if (m)
    check<ShapeError>(m->rows() == rows && m->cols() == cols, model, " weight '", key, "': expected ", rows, " x ",
                      cols, " for this config, got ", m->rows(), " x ", m->cols());
  return m;
}

/// A backbone tensor: IoError naming `model` and the key when the source has none.
template <Backend B>
typename B::Matrix required_weight(const WeightSource& weights, std::string_view model, const std::string& key,
                                   Index rows, Index cols) {
  const std::optional<HostMatrix> m = shaped_weight(weights, model, key, rows, cols);
  check<IoError>(m.has_value(), model, " checkpoint has no tensor '", key, "' (needed by this config)");
  return to_backend<B>(m->view());
}

/// A trainable (out x in) linear head `name`: the source's "<name>.weight" and
/// "<name>.bias" where it has them, else an N(0, 0.02) weight drawn from
/// `draw` and a zero bias, as transformers initialises a new head.
template <Backend B>
TrainableLinear<B> linear_head(const WeightSource& weights, std::string_view model, const std::string& name,
                               Index out, Index in, RandomStream draw) {
  std::optional<HostMatrix> weight = shaped_weight(weights, model, name + ".weight", out, in);
  std::optional<HostMatrix> bias = shaped_weight(weights, model, name + ".bias", 1, out);
  if (!weight) {
    weight = HostMatrix(out, in);
    for (float& v : weight->values()) v = 0.02f * draw.normal();
  }
  if (!bias) bias = HostMatrix(1, out);
  return TrainableLinear<B>(name, to_backend<B>(weight->view()), to_backend<B>(bias->view()));
}

}  // namespace detail
}  // namespace plora
