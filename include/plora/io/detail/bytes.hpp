#pragma once
// Fixed-width values inside file bytes (safetensors data, image headers).
#include <cstddef>
#include <cstring>

namespace plora::io::detail {

/// Reads a little-endian T from possibly unaligned memory (on the
/// little-endian hosts plora builds for, a plain copy).
template <class T>
T read_unaligned(const std::byte* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

}  // namespace plora::io::detail
