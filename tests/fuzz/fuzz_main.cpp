// libFuzzer's entry point for every target of targets.hpp in one executable
// (one per target compiled the heavy readers six times): the environment
// variable PLORA_FUZZ_TARGET names the target a run feeds (scripts/fuzz sets it);
// PLORA_FUZZ_TARGET=list prints the names, one per line, and exits.
#define PLORA_STB_IMPLEMENTATION
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "targets.hpp"

namespace {
plora::fuzz::Target chosen_target = nullptr;

void print_target_names(std::FILE* out, const char* before, const char* after) {
  for (const auto& entry : plora::fuzz::kTargets)
    std::fprintf(out, "%s%.*s%s", before, static_cast<int>(entry.first.size()), entry.first.data(), after);
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* variable = std::getenv("PLORA_FUZZ_TARGET");
  const std::string_view name = variable != nullptr ? variable : "";
  if (name == "list") {
    print_target_names(stdout, "", "\n");
    std::exit(0);
  }
  for (const auto& [target_name, target] : plora::fuzz::kTargets)
    if (target_name == name) chosen_target = target;
  if (chosen_target == nullptr) {
    std::fprintf(stderr, "fuzz_readers: set PLORA_FUZZ_TARGET to one of:");
    print_target_names(stderr, " ", "");
    std::fprintf(stderr, "\n");
    std::exit(1);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  chosen_target({data, size});
  return 0;
}
