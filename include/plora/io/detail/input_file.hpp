#pragma once
// Opening and reading input files by path. An ifstream opens a directory
// without complaint and fails only at its first read, as an empty file or a
// libstdc++ error naming no file; these helpers refuse anything but a
// regular file up front, naming it.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

#include "plora/core/error.hpp"

namespace plora::io::detail {

/// Throws IoError naming `path` (as "`what` 'path'") unless it is a regular file.
inline void check_input_file(const std::filesystem::path& path, std::string_view what = "file") {
  std::error_code error;
  const auto status = std::filesystem::status(path, error);
  check<IoError>(std::filesystem::exists(status), "cannot open ", what, " '", path.string(), "': it does not exist");
  check<IoError>(std::filesystem::is_regular_file(status), "cannot open ", what, " '", path.string(),
                 "': it is not a regular file",
                 std::filesystem::is_directory(status) ? " but a directory" : "");
}

/// An input stream on the regular file `path`.
inline std::ifstream open_input_file(const std::filesystem::path& path, std::string_view what = "file") {
  check_input_file(path, what);
  std::ifstream in(path, std::ios::binary);
  check<IoError>(in.good(), "cannot open ", what, " '", path.string(), "'");
  return in;
}

/// The whole of the regular file `path`.
inline std::string read_file(const std::filesystem::path& path, std::string_view what = "file") {
  std::ifstream in = open_input_file(path, what);
  std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  check<IoError>(!in.bad(), "cannot read ", what, " '", path.string(), "'");
  return bytes;
}

}  // namespace plora::io::detail
