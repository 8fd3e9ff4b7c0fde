#pragma once
// The Mask concept: from a layer shape, a sparsity ratio and optional
// importance scores, choose the kept output rows and input columns of ΔW
// (METHOD.md §1, §3), deterministically from (seed, stream).
//
//   RowColMask sample(const MaskRequest&) const
//
// ElementMask policies do the same for single entries of a weight (Random
// Masking, Xu & Zhang 2024): kept flat row-major indices at a density.
#include <concepts>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "plora/core/error.hpp"
#include "plora/core/view.hpp"

namespace plora {

/// What a mask policy needs to mask one (out x in) weight.
struct MaskRequest {
  Index out = 0;                        ///< rows of W (output features)
  Index in = 0;                         ///< columns of W (input features)
  double ratio = 1.0;                   ///< density of ΔW to keep, in (0, 1]
  std::span<const float> row_scores{};  ///< importance per row (length out), or empty
  std::span<const float> col_scores{};  ///< importance per column (length in), or empty
  std::uint64_t seed = 0;
  std::uint64_t stream = 0;  ///< e.g. stream_id(site name)
  std::string_view site{};   ///< names the weight in error messages
};

/// Kept row and column indices: sorted, unique, never empty.
struct RowColMask {
  std::vector<std::int32_t> rows;
  std::vector<std::int32_t> cols;
};

template <class M>
concept Mask = std::copy_constructible<M> && requires(const M& m, const MaskRequest& request) {
  { m.sample(request) } -> std::same_as<RowColMask>;
};

/// How a layer's ratio p splits into row and column keep probabilities with
/// P(row) * P(col) = p (METHOD.md §1).
template <class S>
concept SplitPolicy = requires(double ratio) {
  { S::probabilities(ratio) } -> std::same_as<std::pair<double, double>>;
};

/// What an element mask policy needs to mask one (rows x cols) weight.
struct ElementMaskRequest {
  Index rows = 0;
  Index cols = 0;
  double density = 1.0;  ///< fraction of entries to keep, in (0, 1]
  std::uint64_t seed = 0;
  std::uint64_t stream = 0;
  std::string_view site{};
};

template <class M>
concept ElementMask = std::copy_constructible<M> && requires(const M& m, const ElementMaskRequest& request) {
  { m.sample(request) } -> std::same_as<std::vector<std::int32_t>>;
};

namespace detail {
inline constexpr Index kMaxMaskIndex = std::numeric_limits<std::int32_t>::max();

/// "mask of 'name'" or "mask" for error messages.
inline std::string site_label(std::string_view site) {
  return site.empty() ? std::string("mask") : "mask of '" + std::string(site) + "'";
}

inline void check_ratio(double ratio, std::string_view site, const char* what) {
  check<ValueError>(ratio > 0.0 && ratio <= 1.0, site_label(site), ": ", what, " ", ratio, " is outside (0, 1]");
}
}  // namespace detail

/// Throws ShapeError / ValueError unless `request` describes a valid layer,
/// a ratio in (0, 1] and scores that are empty or one per row / column.
inline void validate(const MaskRequest& request) {
  const auto label = detail::site_label(request.site);
  check<ShapeError>(request.out > 0 && request.in > 0, label, ": layer shape ", request.out, " x ", request.in,
                    " must be positive");
  check<ShapeError>(request.out <= detail::kMaxMaskIndex && request.in <= detail::kMaxMaskIndex, label,
                    ": layer shape ", request.out, " x ", request.in, " exceeds int32 indices");
  detail::check_ratio(request.ratio, request.site, "ratio");
  check<ShapeError>(request.row_scores.empty() || static_cast<Index>(request.row_scores.size()) == request.out, label,
                    ": expected ", request.out, " row scores, got ", request.row_scores.size());
  check<ShapeError>(request.col_scores.empty() || static_cast<Index>(request.col_scores.size()) == request.in, label,
                    ": expected ", request.in, " column scores, got ", request.col_scores.size());
}

inline void validate(const ElementMaskRequest& request) {
  const auto label = detail::site_label(request.site);
  check<ShapeError>(request.rows > 0 && request.cols > 0, label, ": weight shape ", request.rows, " x ", request.cols,
                    " must be positive");
  check<ShapeError>(request.rows <= detail::kMaxMaskIndex / request.cols, label, ": weight shape ", request.rows, " x ",
                    request.cols, " has more entries than int32 indices can address");
  detail::check_ratio(request.density, request.site, "density");
}

}  // namespace plora
