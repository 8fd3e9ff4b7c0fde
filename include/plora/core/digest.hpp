#pragma once
// Fingerprints. fnv1a: FNV-1a over bytes, for short names (stream ids).
// Digest: a 64-bit fingerprint of data two runs must share (a checkpoint's
// tensors, a data set's examples). FNV-1a's xor-multiply step, fed 8 bytes at
// a time (~2.8 GB/s: 0.1-0.3 s for a base model's weights). Every
// step is a bijection of the state for a given word, so inputs of one length
// that differ in a single word never collide. Not cryptographic: it tells
// apart data that differs, not data made to collide. Words are read in the
// machine's byte order, so a digest is comparable on machines of one
// endianness.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

namespace plora {

namespace detail {
inline constexpr std::uint64_t kFnvOffsetBasis = 0xcbf29ce484222325ull;
inline constexpr std::uint64_t kFnvPrime = 0x100000001b3ull;
}  // namespace detail

/// FNV-1a, 64 bit, byte by byte: a hash of a byte string that is the same on
/// every platform and run (stream ids are drawn from it, so it never changes).
inline std::uint64_t fnv1a(std::string_view bytes) {
  std::uint64_t hash = detail::kFnvOffsetBasis;
  for (const char c : bytes) hash = (hash ^ static_cast<unsigned char>(c)) * detail::kFnvPrime;
  return hash;
}

/// FNV-1a's step over 8-byte words, with lengths mixed in (see above).
class Digest {
 public:
  /// Adds a byte string, its length first (so "ab" + "c" and "a" + "bc" differ).
  Digest& add(std::span<const std::byte> bytes) {
    add_word(bytes.size());
    std::size_t i = 0;
    for (; i + sizeof(std::uint64_t) <= bytes.size(); i += sizeof(std::uint64_t)) {
      std::uint64_t word;
      std::memcpy(&word, bytes.data() + i, sizeof word);
      add_word(word);
    }
    if (i < bytes.size()) {
      std::uint64_t tail = 0;
      std::memcpy(&tail, bytes.data() + i, bytes.size() - i);
      add_word(tail);
    }
    return *this;
  }
  Digest& add(std::string_view text) { return add(std::as_bytes(std::span(text.data(), text.size()))); }
  /// A number's bytes (bit-exact: 0.0f and -0.0f differ).
  template <class T>
  requires std::is_arithmetic_v<T> Digest& add(T value) {
    return add(std::as_bytes(std::span(&value, 1)));
  }

  [[nodiscard]] std::uint64_t value() const { return state_; }
  /// 16 lowercase hex digits.
  [[nodiscard]] std::string hex() const {
    std::string out(16, '0');
    for (std::size_t i = 0; i < 16; ++i) out[15 - i] = "0123456789abcdef"[(state_ >> (4 * i)) & 0xf];
    return out;
  }

 private:
  void add_word(std::uint64_t word) { state_ = (state_ ^ word) * detail::kFnvPrime; }

  std::uint64_t state_ = detail::kFnvOffsetBasis;
};

}  // namespace plora
