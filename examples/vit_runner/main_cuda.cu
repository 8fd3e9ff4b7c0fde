// vit_runner on the CUDA backend: the same runner code as main.cpp,
// instantiated with plora::cuda (cuBLAS, cuSOLVER, our kernels).
#include "plora/backend/cuda/cuda.cuh"
#include "vit_runner/vit_runner.hpp"

int main(int argc, char** argv) { return plora::runner::vit_runner_main<plora::cuda>(argc, argv); }
