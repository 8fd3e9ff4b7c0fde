// vit_runner on the CPU backend (Eigen). See README.md.
#include "plora/backend/cpu/cpu.hpp"
#include "vit_runner/vit_runner.hpp"

int main(int argc, char** argv) { return plora::runner::vit_runner_main<plora::cpu>(argc, argv); }
