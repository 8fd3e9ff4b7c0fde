#pragma once
// A read-only memory mapping of a whole file (POSIX mmap). Weight files of
// hundreds of MB are read in place instead of being copied into memory first.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <utility>

#include "plora/core/error.hpp"

namespace plora::io::detail {

class MappedFile {
 public:
  MappedFile() = default;
  /// Maps `path`; throws IoError naming the file when it cannot be opened or mapped.
  explicit MappedFile(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    check<IoError>(fd >= 0, "cannot open '", path.string(), "': ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw IoError(plora::detail::concat("'", path.string(), "' is not a readable regular file"));
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {  // mmap rejects length 0; an empty file maps to an empty span
      void* address = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      const int saved_errno = errno;
      ::close(fd);
      check<IoError>(address != MAP_FAILED, "cannot map '", path.string(), "': ", std::strerror(saved_errno));
      data_ = static_cast<const std::byte*>(address);
    } else {
      ::close(fd);
    }
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      unmap();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~MappedFile() { unmap(); }

  [[nodiscard]] std::span<const std::byte> bytes() const { return {data_, size_}; }

  /// Drops the whole pages inside `range` (a part of bytes() whose contents
  /// were copied out) from the process's memory, so a loaded model does not
  /// hold each weight twice, as file pages and as its own copy. A later read
  /// maps them in again from the file: the mapping is read-only and private,
  /// so no page was ever modified. Advice only: a failure changes nothing.
  void release(std::span<const std::byte> range) const {
    const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    const auto first = reinterpret_cast<std::uintptr_t>(range.data());
    const std::uintptr_t begin = (first + page - 1) / page * page, end = (first + range.size()) / page * page;
    if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  }

 private:
  void unmap() {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = nullptr;
  }
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace plora::io::detail
