#pragma once
// The adapter family: LoRA, AdaLoRA (+ its rank allocator), their row/column
// restricted Partial forms, full fine-tuning and Random Masking. Each satisfies
// plora::Adapter (concepts.hpp) and is built as A(out, in, config, RandomStream).
#include "plora/adapters/adalora.hpp"
#include "plora/adapters/adalora_allocator.hpp"
#include "plora/adapters/concepts.hpp"
#include "plora/adapters/full_delta.hpp"
#include "plora/adapters/lora.hpp"
#include "plora/adapters/partial.hpp"
#include "plora/adapters/random_masking.hpp"
