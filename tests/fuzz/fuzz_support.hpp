#pragma once
// What every fuzz target shares: the bytes go to a file (the readers under
// test take paths, as users call them) and a plora::Error is the one
// acceptable way to refuse them. Any other exception escapes to libFuzzer,
// which reports it as a crash with the input that caused it.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>

#include "plora/core/error.hpp"

namespace plora::fuzz {

/// A file of this process's own, rewritten with each input.
inline std::filesystem::path input_file(std::span<const std::uint8_t> bytes, const std::string& suffix) {
  const auto path =
      std::filesystem::temp_directory_path() / ("plora-fuzz-" + std::to_string(::getpid()) + suffix);
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return path;
}

/// Runs `body`, accepting a plora::Error as the reader's refusal.
template <class F>
void refused_or_read(F&& body) {
  try {
    body();
  } catch (const plora::Error&) {
  }
}

}  // namespace plora::fuzz
