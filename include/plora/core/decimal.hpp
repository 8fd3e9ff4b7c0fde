#pragma once
// Whole numbers that names and keys carry ("encoder.layer.3", id2label's
// "2"), read in canonical decimal only: "03", "+3" or "-0" would otherwise
// alias another spelling of the same number.
#include <charconv>
#include <optional>
#include <string_view>
#include <system_error>

#include "plora/core/view.hpp"

namespace plora::detail {

/// The value of `text` when it is a canonical non-negative decimal (digits
/// only, no leading zero), else nothing.
inline std::optional<Index> parse_index(std::string_view text) {
  if (text.empty() || text.front() < '0' || text.front() > '9' || (text.size() > 1 && text.front() == '0'))
    return std::nullopt;
  Index value = -1;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace plora::detail
