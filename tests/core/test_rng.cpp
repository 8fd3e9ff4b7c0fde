#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "plora/core/rng.hpp"

using plora::RandomStream;

TEST_CASE("Philox4x32-10 matches the Random123 known-answer vector") {
  // Random123's kat_vectors: philox4x32 10 rounds, counter = key = 0.
  const auto block = plora::detail::philox4x32_10({{0, 0, 0, 0}}, 0, 0);
  CHECK(block.v[0] == 0x6627e8d5u);
  CHECK(block.v[1] == 0xe169c58du);
  CHECK(block.v[2] == 0xbc57ac4cu);
  CHECK(block.v[3] == 0x9b00dbd8u);
}

TEST_CASE("a stream's n-th draw depends only on (seed, stream, n)") {
  RandomStream sequential(42, 7);
  std::vector<float> draws;
  for (int i = 0; i < 100; ++i) draws.push_back(sequential.uniform());
  for (int i = 99; i >= 0; --i) CHECK(RandomStream::uniform_at(42, 7, static_cast<std::uint64_t>(i)) == draws[static_cast<std::size_t>(i)]);
  RandomStream other_stream(42, 8);
  CHECK(other_stream.uniform() != draws[0]);
  RandomStream resumed(42, 7, 50);
  CHECK(resumed.uniform() == draws[50]);
}

TEST_CASE("uniform draws have the moments of U(0, 1)") {
  RandomStream stream(1, 2);
  const int n = 100000;
  double sum = 0, sum_sq = 0;
  for (int i = 0; i < n; ++i) {
    const double u = stream.uniform();
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    sum += u;
    sum_sq += u * u;
  }
  // Standard error of the mean is sqrt(1/12 / n) ~ 9.1e-4; allow 5 of them.
  CHECK(std::abs(sum / n - 0.5) < 5 * 9.1e-4);
  CHECK(std::abs(sum_sq / n - sum / n * sum / n - 1.0 / 12) < 2e-3);
}
