#pragma once
// Compact copies of factor rows / columns, for RestrictableAdapter::restricted.
#include <cstdint>
#include <span>
#include <vector>

#include "plora/backend/concepts.hpp"

namespace plora::detail {

/// src[ids, :] as a new (|ids| x cols) matrix.
template <Backend B>
typename B::Matrix gather_rows_of(ConstView<typename B::Space> src, const std::vector<std::int32_t>& ids) {
  typename B::Matrix out(static_cast<Index>(ids.size()), src.cols);
  B::gather_rows(out.view(), src, B::make_indices(std::span<const std::int32_t>(ids)));
  return out;
}

/// src[:, ids] as a new (rows x |ids|) matrix.
template <Backend B>
typename B::Matrix gather_cols_of(ConstView<typename B::Space> src, const std::vector<std::int32_t>& ids) {
  typename B::Matrix out(src.rows, static_cast<Index>(ids.size()));
  B::gather_cols(out.view(), src, B::make_indices(std::span<const std::int32_t>(ids)));
  return out;
}

}  // namespace plora::detail
