#pragma once
// Helpers for the io tests: a scratch directory removed at scope exit, raw
// file writing for crafted (often malformed) inputs, and the message of an
// expected exception so that tests can check what it names.
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace plora::test {

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("plora_test_io_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  [[nodiscard]] std::filesystem::path operator/(std::string_view name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline void write_bytes(const std::filesystem::path& path, std::string_view bytes) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

inline std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// The message of the `E` that `f` throws; fails the test if it throws
/// nothing or something else.
template <class E, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& error) {
    return error.what();
  } catch (const std::exception& error) {
    FAIL("unexpected exception type: " << error.what());
  }
  FAIL("no exception thrown");
  return {};
}

/// An uncompressed 24-bit BMP of width x height whose channel c (R, G, B) at
/// (y, x) is pixel(y, x, c), y = 0 the top row.
template <class Pixel>
std::string bmp_bytes(int width, int height, Pixel pixel) {
  const int row = (3 * width + 3) / 4 * 4;
  const int size = 54 + row * height;
  std::string out(static_cast<std::size_t>(size), '\0');
  const auto put = [&](int at, std::uint32_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) out[static_cast<std::size_t>(at + i)] = static_cast<char>((value >> (8 * i)) & 0xFF);
  };
  out[0] = 'B';
  out[1] = 'M';
  put(2, static_cast<std::uint32_t>(size), 4);
  put(10, 54, 4);   // pixel data offset
  put(14, 40, 4);   // BITMAPINFOHEADER
  put(18, static_cast<std::uint32_t>(width), 4);
  put(22, static_cast<std::uint32_t>(height), 4);  // positive: bottom-up rows
  put(26, 1, 2);
  put(28, 24, 2);
  put(34, static_cast<std::uint32_t>(row * height), 4);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c)
        out[static_cast<std::size_t>(54 + (height - 1 - y) * row + 3 * x + (2 - c))] = static_cast<char>(pixel(y, x, c));
  return out;
}

inline bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

}  // namespace plora::test
