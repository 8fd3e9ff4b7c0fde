#pragma once
// Files and data: safetensors, atomic file writes, Hugging Face configs,
// images and image datasets, model checkpoints, ratios.json. Needs nlohmann_json, stb_image and zlib (link
// plora::io). Define PLORA_STB_IMPLEMENTATION in exactly one translation unit
// (see image.hpp). The text readers (tokenizer.hpp, glue.hpp) need
// SentencePiece and are included separately.
#include "plora/io/atomic_file.hpp"
#include "plora/io/checkpoint_layers.hpp"
#include "plora/io/datasets.hpp"
#include "plora/io/deberta_checkpoint.hpp"
#include "plora/io/hf_config.hpp"
#include "plora/io/image.hpp"
#include "plora/io/ratios_json.hpp"
#include "plora/io/safetensors.hpp"
#include "plora/io/vit_checkpoint.hpp"
