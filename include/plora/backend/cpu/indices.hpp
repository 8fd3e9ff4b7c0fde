#pragma once
// Host index lists. A strictly increasing list (Partial's kept rows and
// columns) also stores its runs per 16-float line of the wide side, so that a
// column gather is a load + lane permutation per line and a column
// scatter-add a permutation + blended add per line, instead of a scalar load
// or read-modify-write per kept element. AVX-512 permutes a whole line by its
// own lane order, stored with the line; AVX2 permutes each 8-float half line
// by a table entry for its 8-bit mask.
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#define PLORA_CPU_LINE_KERNELS 1
#endif

namespace plora::detail::cpu {

/// The kept ids of one 16-float line of a wide row.
struct IndexLine {
  std::int32_t wide = 0;     ///< first column of the line in the wide row
  std::int32_t compact = 0;  ///< position of its first kept id in the compact row
  std::uint16_t kept = 0;    ///< bit l set: column wide + l is kept
  std::uint16_t packed = 0;  ///< the low popcount(kept) bits: the line's compact run
};

/// The lane permutations of one line for the AVX-512 kernels: gather lane i
/// takes the line's i-th kept lane; scatter lane l, if kept, takes the line's
/// compact slot (kept lanes below l).
struct LineLanes {
  std::array<std::uint8_t, 16> gather{};
  std::array<std::uint8_t, 16> scatter{};
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
  /// The lane permutations of each line, in the order of lines().
  [[nodiscard]] std::span<const LineLanes> lanes() const { return lanes_; }

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
    lanes_.resize(lines_.size());
    for (std::size_t l = 0; l < lines_.size(); ++l) {
      std::uint8_t slot = 0;
      for (std::uint8_t lane = 0; lane < kLineFloats; ++lane)
        if ((lines_[l].kept >> lane) & 1u) {
          lanes_[l].gather[slot] = lane;
          lanes_[l].scatter[lane] = slot++;
        }
    }
  }

  std::vector<std::int32_t> ids_;
  std::vector<IndexLine> lines_;
  std::vector<LineLanes> lanes_;
};

#ifdef PLORA_CPU_LINE_KERNELS
/// Whether the line kernels below take these ids: an increasing list with
/// at least 5 kept per line on average. On both instruction sets a line
/// costs about as much as 5 scalar elements (bench_rows, docs/benchmarks.md
/// §12 for AVX2 on Zen 3, §13 for AVX-512 on Zen 5): the scalar loops are
/// 1.5-2x faster at 13 % of the columns kept, level near 30 %, and slower
/// above (2-3.5x at 100 %).
inline bool use_lines(const HostIndices& ids) {
  return !ids.lines().empty() && ids.size() >= 5 * ids.lines().size();
}
#endif

#ifdef __AVX512F__
namespace avx512 {
inline __m512i lane_order(const std::array<std::uint8_t, 16>& lanes) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lanes.data())));
}
/// A whole line where it lies inside its row (`whole`), else only `lanes`:
/// plain loads and stores are faster, masked ones touch nothing past the row.
inline __m512 load_line(const float* p, bool whole, __mmask16 lanes) {
  return whole ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lanes, p);
}
inline void store_line(float* p, bool whole, __mmask16 lanes, __m512 v) {
  if (whole)
    _mm512_storeu_ps(p, v);
  else
    _mm512_mask_storeu_ps(p, lanes, v);
}
/// body(line, its lane orders) for each line of ids, in order.
template <class Body>
void for_each_line(const HostIndices& ids, Body&& body) {
  const auto lines = ids.lines();
  const auto lanes = ids.lanes();
  for (std::size_t l = 0; l < lines.size(); ++l) body(lines[l], lanes[l]);
}
}  // namespace avx512

/// compact[j] = wide[ids[j]] for one row of `width` floats, a line at a time,
/// its kept lanes moved to the front by the line's permutation. Lines inside
/// the row are loaded whole and runs stored whole (the next run overwrites
/// the spare lanes); only the row's last, partial line and the compact row's
/// end are masked. Against masked accesses and a compress per line, 1.2x
/// faster on Zen 5 (docs/benchmarks.md §13).
inline void gather_lines(const float* wide, std::int32_t width, float* compact, const HostIndices& ids) {
  constexpr std::int32_t kLine = HostIndices::kLineFloats;
  const auto end = static_cast<std::int32_t>(ids.size());
  avx512::for_each_line(ids, [&](const IndexLine& line, const LineLanes& lanes) {
    const __m512 whole = avx512::load_line(wide + line.wide, line.wide + kLine <= width, line.kept);
    const __m512 run = _mm512_permutexvar_ps(avx512::lane_order(lanes.gather), whole);
    avx512::store_line(compact + line.compact, line.compact + kLine <= end, line.packed, run);
  });
}
/// wide[ids[j]] += alpha * compact[j] for one row of `width` floats, a line
/// at a time: the line's compact run spread to its kept lanes by the line's
/// permutation and added there, the other lanes blended back bit for bit.
/// Whole loads and stores inside the rows, masked at their ends, as in
/// gather_lines: 2x faster than masked accesses and an expand per line on
/// Zen 5. The multiply and add round as the scalar loop's may.
inline void scatter_add_lines(float* wide, std::int32_t width, const float* compact, const HostIndices& ids,
                              float alpha) {
  constexpr std::int32_t kLine = HostIndices::kLineFloats;
  const __m512 scale = _mm512_set1_ps(alpha);
  const auto end = static_cast<std::int32_t>(ids.size());
  avx512::for_each_line(ids, [&](const IndexLine& line, const LineLanes& lanes) {
    const __m512 packed = avx512::load_line(compact + line.compact, line.compact + kLine <= end, line.packed);
    const __m512 run = _mm512_permutexvar_ps(avx512::lane_order(lanes.scatter), packed);
    const bool inside = line.wide + kLine <= width;
    const __m512 before = avx512::load_line(wide + line.wide, inside, line.kept);
    avx512::store_line(wide + line.wide, inside, line.kept,
                       _mm512_mask_add_ps(before, line.kept, before, _mm512_mul_ps(scale, run)));
  });
}
#elif defined(__AVX2__)
namespace avx2 {
/// For each 8-bit mask of kept lanes, 8 lane indices of one byte each: to
/// compress, slot i takes the i-th kept lane; to expand, kept lane l takes
/// slot (kept lanes below l). Unused bytes stay 0.
constexpr std::array<std::uint64_t, 256> lane_table(bool expand) {
  std::array<std::uint64_t, 256> table{};
  for (unsigned mask = 0; mask < 256; ++mask) {
    unsigned slot = 0;
    for (unsigned lane = 0; lane < 8; ++lane) {
      if ((mask >> lane & 1u) == 0) continue;
      const unsigned to = expand ? lane : slot, from = expand ? slot : lane;
      table[mask] |= std::uint64_t{from} << (8 * to);
      ++slot;
    }
  }
  return table;
}
inline constexpr std::array<std::uint64_t, 256> kCompress = lane_table(false);
inline constexpr std::array<std::uint64_t, 256> kExpand = lane_table(true);

inline __m256i permutation(std::uint64_t bytes) {
  return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(bytes)));
}
/// All-ones in lane l where bit l of mask is set.
inline __m256i lanes_of(unsigned mask) {
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(mask)), bit), bit);
}
/// All-ones in the first `count` lanes.
inline __m256i first_lanes(int count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/// Calls half(mask, wide, compact) for both 8-float halves of each line: its
/// kept lanes, its first column, its run's first compact position. An empty
/// half (mask 0) is not skipped: the kernels below do no harm with one, and a
/// branch on it mispredicts at low keep fractions.
template <class Half>
void for_each_half(std::span<const IndexLine> lines, Half&& half) {
  for (const IndexLine& line : lines) {
    const unsigned low = line.kept & 0xFFu;
    half(low, line.wide, line.compact);
    half(static_cast<unsigned>(line.kept >> 8), line.wide + 8, line.compact + std::popcount(low));
  }
}
}  // namespace avx2

/// compact[j] = wide[ids[j]] for one row of `width` floats, half a line at a
/// time. Halves inside the row use plain loads and stores: masked ones cost
/// 1.2-4x as much on Zen 3 (docs/benchmarks.md §12). A run is stored as a
/// full 8-float vector, its spare lanes overwritten by the next run, unless
/// that would reach past the row's last compact value.
inline void gather_lines(const float* wide, std::int32_t width, float* compact, const HostIndices& ids) {
  const auto end = static_cast<std::int32_t>(ids.size());
  avx2::for_each_half(ids.lines(), [&](unsigned mask, std::int32_t first, std::int32_t at) {
    const __m256 half = first + 8 <= width ? _mm256_loadu_ps(wide + first)
                                           : _mm256_maskload_ps(wide + first, avx2::lanes_of(mask));
    const __m256 run = _mm256_permutevar8x32_ps(half, avx2::permutation(avx2::kCompress[mask]));
    if (at + 8 <= end)
      _mm256_storeu_ps(compact + at, run);
    else
      _mm256_maskstore_ps(compact + at, avx2::first_lanes(std::popcount(mask)), run);
  });
}
/// wide[ids[j]] += alpha * compact[j] for one row of `width` floats, half a
/// line at a time. Inside the row a half is loaded whole, added to on its
/// kept lanes (the others blended back bit for bit) and stored whole; only
/// the row's last, partial half is masked, so nothing past the row is
/// touched. The multiply and add round as the scalar loop's may.
inline void scatter_add_lines(float* wide, std::int32_t width, const float* compact, const HostIndices& ids,
                              float alpha) {
  const auto end = static_cast<std::int32_t>(ids.size());
  const __m256 scale = _mm256_set1_ps(alpha);
  avx2::for_each_half(ids.lines(), [&](unsigned mask, std::int32_t first, std::int32_t at) {
    const __m256 packed = at + 8 <= end ? _mm256_loadu_ps(compact + at)
                                        : _mm256_maskload_ps(compact + at, avx2::first_lanes(std::popcount(mask)));
    const __m256 run = _mm256_mul_ps(scale, _mm256_permutevar8x32_ps(packed, avx2::permutation(avx2::kExpand[mask])));
    const __m256i lanes = avx2::lanes_of(mask);
    if (first + 8 <= width) {
      const __m256 old = _mm256_loadu_ps(wide + first);
      _mm256_storeu_ps(wide + first, _mm256_blendv_ps(old, _mm256_add_ps(old, run), _mm256_castsi256_ps(lanes)));
    } else {
      _mm256_maskstore_ps(wide + first, lanes, _mm256_add_ps(_mm256_maskload_ps(wide + first, lanes), run));
    }
  });
}
#endif

}  // namespace plora::detail::cpu
