// Digest: deterministic, sensitive to every byte and to where strings split.
#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <string>

#include "plora/core/digest.hpp"

using namespace plora;

TEST_CASE("Digest: the same input gives the same value, every byte and split counts") {
  CHECK(Digest().add("weights").value() == Digest().add("weights").value());
  CHECK(Digest().add("ab").add("c").value() != Digest().add("a").add("bc").value());  // lengths go in first
  CHECK(Digest().add("").value() != Digest().value());                              // an empty string is an input
  // 8-byte words and a tail: a change in either changes the value.
  std::array<std::byte, 13> bytes{};
  const std::uint64_t zeros = Digest().add(bytes).value();
  for (std::size_t i : {std::size_t{0}, std::size_t{7}, std::size_t{8}, std::size_t{12}}) {
    CAPTURE(i);
    std::array<std::byte, 13> changed = bytes;
    changed[i] = std::byte{1};
    CHECK(Digest().add(changed).value() != zeros);
  }
  CHECK(Digest().add(0.0f).value() != Digest().add(-0.0f).value());  // bit-exact
  const std::string hex = Digest().add("x").hex();
  CHECK(hex.size() == 16);
  CHECK(hex.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(std::stoull(hex, nullptr, 16) == Digest().add("x").value());
}
