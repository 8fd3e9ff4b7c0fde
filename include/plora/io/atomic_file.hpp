#pragma once
// Crash-safe file replacement: the bytes go to `<path>.tmp-<pid>`, are flushed
// and fsync'ed, and only then renamed over `path` (rename is atomic on POSIX),
// so a reader sees either the complete previous file or the complete new one.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

#include "plora/core/error.hpp"

namespace plora::io {

namespace detail {
inline void write_all(int fd, std::string_view bytes, const std::filesystem::path& tmp) {
  while (!bytes.empty()) {
    const ssize_t written = ::write(fd, bytes.data(), bytes.size());
    if (written < 0 && errno == EINTR) continue;
    check<IoError>(written > 0, "cannot write '", tmp.string(), "': ", std::strerror(errno));
    bytes.remove_prefix(static_cast<std::size_t>(written));
  }
}
}  // namespace detail

/// Replaces `path` by the concatenation of `pieces`. On any failure the
/// temporary file is removed, the previous `path` (if any) is left untouched and
/// an IoError naming the file is thrown.
inline void write_file_atomically(const std::filesystem::path& path, std::span<const std::string_view> pieces) {
  const std::filesystem::path tmp = path.string() + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  check<IoError>(fd >= 0, "cannot create '", tmp.string(), "' to write '", path.string(), "': ", std::strerror(errno));
  bool fd_open = true;
  try {
    for (const std::string_view piece : pieces) detail::write_all(fd, piece, tmp);
    check<IoError>(::fsync(fd) == 0, "cannot flush '", tmp.string(), "': ", std::strerror(errno));
    fd_open = false;  // Linux releases the descriptor even when close fails
    check<IoError>(::close(fd) == 0, "cannot close '", tmp.string(), "': ", std::strerror(errno));
  } catch (...) {
    if (fd_open) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int saved_errno = errno;
    ::unlink(tmp.c_str());
    throw IoError(plora::detail::concat("cannot replace '", path.string(), "': ", std::strerror(saved_errno)));
  }
  // Persist the rename itself; a directory that cannot be fsync'ed (some
  // network file systems) still holds the complete file, so this is best effort.
  const std::filesystem::path parent = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  if (const int dir = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

inline void write_file_atomically(const std::filesystem::path& path, std::string_view bytes) {
  write_file_atomically(path, std::span<const std::string_view>(&bytes, 1));
}

}  // namespace plora::io
