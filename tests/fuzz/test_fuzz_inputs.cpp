// The committed fuzz inputs (tests/data/fuzz/<target>/: the seeds scripts/fuzz
// starts from, and every input a fuzzing run found at fault, once fixed), each
// read again by its target in targets.hpp: the reader must accept it or refuse
// it with a plora::Error, under this build's checks (ASan + UBSan in CI's
// sanitizer build).
#define PLORA_STB_IMPLEMENTATION  // this test binary's one stb_image implementation
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>

#include "fuzz/targets.hpp"
#include "io/io_support.hpp"

TEST_CASE("every file reader accepts or refuses each committed fuzz input with a plora error") {
  for (const auto& [name, target] : plora::fuzz::kTargets) {
    const auto directory = std::filesystem::path(PLORA_TEST_DATA_DIR) / "fuzz" / std::string(name);
    std::size_t replayed = 0;
    for (const auto& entry : std::filesystem::directory_iterator(directory)) {
      CAPTURE(entry.path().string());
      const std::string bytes = plora::test::read_bytes(entry.path());
      CHECK_NOTHROW(target({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()}));
      ++replayed;
    }
    CAPTURE(name);
    CHECK(replayed > 0);  // a target without inputs would pass vacuously
  }
}
