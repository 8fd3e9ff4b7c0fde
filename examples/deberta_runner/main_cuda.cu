// deberta_runner on the CUDA backend: the same runner code as main.cpp,
// instantiated with plora::cuda (cuBLAS, cuSOLVER, our kernels).
#include "deberta_runner/deberta_runner.hpp"
#include "plora/backend/cuda/cuda.cuh"

int main(int argc, char** argv) { return plora::runner::deberta_runner_main<plora::cuda>(argc, argv); }
