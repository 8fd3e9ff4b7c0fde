#pragma once
// Host index lists. A strictly increasing list (Partial's kept rows and
// columns) also stores its runs per 16-float line of the wide side, so that
// with AVX-512 a column gather is one masked load + compress per line and a
// column scatter-add one expand + masked add per line, instead of a scalar
// load or read-modify-write per kept element.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace plora::detail::cpu {

/// The kept ids of one 16-float line of a wide row.
struct IndexLine {
  std::int32_t wide = 0;     ///< first column of the line in the wide row
  std::int32_t compact = 0;  ///< position of its first kept id in the compact row
  std::uint16_t kept = 0;    ///< bit l set: column wide + l is kept
  std::uint16_t packed = 0;  ///< the low popcount(kept) bits: the line's compact run
};

class HostIndices {
 public:
  static constexpr std::int32_t kLineFloats = 16;

  HostIndices() = default;
  explicit HostIndices(std::span<const std::int32_t> ids) : ids_(ids.begin(), ids.end()) { build_lines(); }

  [[nodiscard]] std::size_t size() const { return ids_.size(); }
  [[nodiscard]] bool empty() const { return ids_.empty(); }
  [[nodiscard]] const std::int32_t* data() const { return ids_.data(); }
  [[nodiscard]] std::int32_t operator[](std::size_t i) const { return ids_[i]; }
  [[nodiscard]] auto begin() const { return ids_.begin(); }
  [[nodiscard]] auto end() const { return ids_.end(); }

  /// The lines holding a kept id, in order; empty unless the ids strictly
  /// increase (and are non-negative), the case the line kernels need.
  [[nodiscard]] std::span<const IndexLine> lines() const { return lines_; }

 private:
  void build_lines() {
    for (std::size_t i = 0; i < ids_.size(); ++i)
      if (ids_[i] < 0 || (i > 0 && ids_[i] <= ids_[i - 1])) return;
    for (std::size_t i = 0; i < ids_.size(); ++i) {
      const std::int32_t wide = ids_[i] / kLineFloats * kLineFloats;
      if (lines_.empty() || lines_.back().wide != wide)
        lines_.push_back({.wide = wide, .compact = static_cast<std::int32_t>(i), .kept = 0, .packed = 0});
      IndexLine& line = lines_.back();
      line.kept = static_cast<std::uint16_t>(line.kept | (1u << (ids_[i] - wide)));
      line.packed = static_cast<std::uint16_t>((1u << std::popcount(line.kept)) - 1u);
    }
  }

  std::vector<std::int32_t> ids_;
  std::vector<IndexLine> lines_;
};

#ifdef __AVX512F__
/// compact[j] = wide[ids[j]] for one row, a line at a time.
inline void gather_lines(const float* wide, float* compact, std::span<const IndexLine> lines) {
  for (const IndexLine& line : lines) {
    const __m512 kept = _mm512_maskz_loadu_ps(line.kept, wide + line.wide);
    _mm512_mask_storeu_ps(compact + line.compact, line.packed, _mm512_maskz_compress_ps(line.kept, kept));
  }
}
/// wide[ids[j]] += alpha * compact[j] for one row, a line at a time (the
/// compiler may contract the multiply-add, as it may the scalar loop's).
inline void scatter_add_lines(float* wide, const float* compact, std::span<const IndexLine> lines, float alpha) {
  const __m512 scale = _mm512_set1_ps(alpha);
  for (const IndexLine& line : lines) {
    const __m512 run = _mm512_maskz_expand_ps(line.kept, _mm512_maskz_loadu_ps(line.packed, compact + line.compact));
    const __m512 sum = _mm512_add_ps(_mm512_maskz_loadu_ps(line.kept, wide + line.wide), _mm512_mul_ps(scale, run));
    _mm512_mask_storeu_ps(wide + line.wide, line.kept, sum);
  }
}
#endif

}  // namespace plora::detail::cpu
