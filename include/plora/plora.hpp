#pragma once
// plora's umbrella header: the core, the CPU backend and every algorithm family.
// Not included here, on purpose:
//   plora/io/io.hpp (+ tokenizer.hpp, glue.hpp)  files and data; link plora::io / plora::text
//   plora/backend/cuda/cuda.cuh                  the CUDA backend; nvcc translation units only
//   plora/train/checkpoint.hpp                   checkpoints are files; link plora::io
#include "plora/adapters/adapters.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/backend/cpu/cpu.hpp"
#include "plora/core/error.hpp"
#include "plora/core/host_matrix.hpp"
#include "plora/core/parameter.hpp"
#include "plora/core/rng.hpp"
#include "plora/core/view.hpp"
#include "plora/masks/masks.hpp"
#include "plora/models/concepts.hpp"
#include "plora/models/deberta_v2.hpp"
#include "plora/models/sites.hpp"
#include "plora/models/vit.hpp"
#include "plora/nn/linear_site.hpp"
#include "plora/sparsity/sparsity.hpp"
#include "plora/train/metrics.hpp"
#include "plora/train/train.hpp"
