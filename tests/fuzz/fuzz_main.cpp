// libFuzzer's entry point for one target of targets.hpp, named by the
// PLORA_FUZZ_TARGET definition (one executable per target; see CMakeLists.txt).
#define PLORA_STB_IMPLEMENTATION
#include <cstddef>
#include <cstdint>

#include "targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  plora::fuzz::PLORA_FUZZ_TARGET({data, size});
  return 0;
}
