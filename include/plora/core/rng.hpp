#pragma once
// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11). The
// n-th number of a stream is a pure function of (seed, stream, n), so a mask or
// an initialisation is identical on every backend and for every thread count.
#include <cmath>
#include <cstdint>
#include <numbers>
#include <string_view>

#include "plora/core/digest.hpp"

// Lets the same counter-based generator run inside CUDA kernels.
#if defined(__CUDACC__)
#define PLORA_HOST_DEVICE __host__ __device__
#else
#define PLORA_HOST_DEVICE
#endif

namespace plora {

namespace detail {
struct Philox4 {
  std::uint32_t v[4];
};

PLORA_HOST_DEVICE inline Philox4 philox4x32_10(Philox4 counter, std::uint32_t key0, std::uint32_t key1) {
  constexpr std::uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr std::uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = std::uint64_t{kMul0} * counter.v[0];
    const std::uint64_t p1 = std::uint64_t{kMul1} * counter.v[2];
    counter = {{static_cast<std::uint32_t>(p1 >> 32) ^ counter.v[1] ^ key0, static_cast<std::uint32_t>(p1),
                static_cast<std::uint32_t>(p0 >> 32) ^ counter.v[3] ^ key1, static_cast<std::uint32_t>(p0)}};
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  return counter;
}
}  // namespace detail

/// Named, reproducible random stream: `seed` picks the experiment, `stream`
/// separates independent uses (one per layer, per mask, ...). Its state is the
/// `offset` of the next draw, which a checkpoint saves to resume exactly.
class RandomStream {
 public:
  RandomStream() = default;
  RandomStream(std::uint64_t seed, std::uint64_t stream, std::uint64_t offset = 0)
      : seed_(seed), stream_(stream), offset_(offset) {}

  /// The `index`-th 32-bit word of stream (seed, stream), independent of any state.
  [[nodiscard]] PLORA_HOST_DEVICE static std::uint32_t word_at(std::uint64_t seed, std::uint64_t stream,
                                                                std::uint64_t index) {
    const detail::Philox4 block = detail::philox4x32_10(
        {{static_cast<std::uint32_t>(index >> 2), static_cast<std::uint32_t>(index >> 34),
          static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32)}},
        static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
    return block.v[index & 3u];
  }
  /// Uniform in [0, 1) with 24 random bits (exact in float).
  [[nodiscard]] PLORA_HOST_DEVICE static float uniform_at(std::uint64_t seed, std::uint64_t stream, std::uint64_t index) {
    return static_cast<float>(word_at(seed, stream, index) >> 8) * (1.0f / 16777216.0f);
  }

  std::uint32_t next_word() { return word_at(seed_, stream_, offset_++); }
  float uniform() { return uniform_at(seed_, stream_, offset_++); }
  /// Uniform in [low, high): one fused multiply-add, rounded once, so that every
  /// compiler and flag set (a -march=native g++ unit contracts a * b + c, an
  /// nvcc unit's host code does not) draws the same floats.
  float uniform(float low, float high) { return std::fma(high - low, uniform(), low); }
  /// Standard normal by Box-Muller over two uniforms (two draws per call).
  float normal() {
    const double u1 = 1.0 - static_cast<double>(uniform());  // in (0, 1]
    const double u2 = static_cast<double>(uniform());
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2));
  }
  /// Uniform integer in [0, bound) (bound > 0), by 64-bit multiply-shift.
  std::uint32_t below(std::uint32_t bound) {
    return static_cast<std::uint32_t>((std::uint64_t{next_word()} * bound) >> 32);
  }

  [[nodiscard]] std::uint64_t seed() const { return seed_; }
  [[nodiscard]] std::uint64_t stream() const { return stream_; }
  [[nodiscard]] std::uint64_t offset() const { return offset_; }
  void set_offset(std::uint64_t offset) { offset_ = offset; }

 private:
  std::uint64_t seed_ = 0;
  std::uint64_t stream_ = 0;
  std::uint64_t offset_ = 0;
};

/// A stable 64-bit stream id from a name, so e.g. each adapter site gets its
/// own stream from its PEFT-style name.
inline std::uint64_t stream_id(std::string_view name) { return fnv1a(name); }

}  // namespace plora
