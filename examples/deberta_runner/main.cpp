// deberta_runner on the CPU backend (Eigen). See README.md.
#include "deberta_runner/deberta_runner.hpp"
#include "plora/backend/cpu/cpu.hpp"

int main(int argc, char** argv) { return plora::runner::deberta_runner_main<plora::cpu>(argc, argv); }
