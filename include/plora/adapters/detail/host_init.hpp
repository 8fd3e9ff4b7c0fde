#pragma once
// Initial adapter values are drawn on the host, row-major, from a RandomStream
// and then uploaded, so every backend starts from identical adapters.
#include "plora/core/host_matrix.hpp"
#include "plora/core/rng.hpp"

namespace plora::detail {

/// (rows x cols) of U(low, high).
inline HostMatrix uniform_host(Index rows, Index cols, float low, float high, RandomStream& stream) {
  HostMatrix out(rows, cols);
  for (float& v : out.values()) v = stream.uniform(low, high);
  return out;
}

/// (rows x cols) of N(0, std^2).
inline HostMatrix normal_host(Index rows, Index cols, float std, RandomStream& stream) {
  HostMatrix out(rows, cols);
  for (float& v : out.values()) v = std * stream.normal();
  return out;
}

/// The dropout stream of an adapter: same seed as its init stream, a separate
/// stream id, so dropout draws never reuse initialisation draws.
inline RandomStream dropout_stream_of(const RandomStream& init) {
  return {init.seed(), init.stream() ^ stream_id("plora.adapter.dropout")};
}

}  // namespace plora::detail
