#pragma once
// Fuzz targets: the readers of every file a user hands plora, fed arbitrary
// bytes. Each target writes the bytes to a file of this process's own (the
// readers take paths, as users call them) and accepts a plora::Error as the
// reader's refusal. Anything else (another exception, a crash, a sanitizer
// report, a runaway allocation) is a defect: under libFuzzer (fuzz_main.cpp,
// scripts/fuzz) it is reported with the input that caused it; test_fuzz_inputs
// replays the committed inputs in every CTest run.
//
// Where a target reads more than one format, the first input byte picks it.
// The seed inputs come from tools/make_fuzz_inputs.py.
#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "plora/adapters/lora.hpp"
#include "plora/backend/cpu/cpu.hpp"
#include "plora/core/error.hpp"
#include "plora/io/datasets.hpp"
#include "plora/io/deberta_checkpoint.hpp"
#include "plora/io/glue.hpp"
#include "plora/io/hf_config.hpp"
#include "plora/io/image.hpp"
#include "plora/io/ratios_json.hpp"
#include "plora/io/safetensors.hpp"
#include "plora/io/tokenizer.hpp"
#include "plora/io/vit_checkpoint.hpp"
#include "plora/train/checkpoint.hpp"

namespace plora::fuzz {

using Bytes = std::span<const std::uint8_t>;

/// `bytes` written to this process's file ending in `suffix`, rewritten per
/// input and removed when the input is done: replaying or fuzzing leaves
/// nothing in the temporary directory.
class InputFile {
 public:
  InputFile(Bytes bytes, std::string_view suffix)
      : path_(std::filesystem::temp_directory_path() /
              ("plora-fuzz-" + std::to_string(::getpid()) + std::string(suffix))) {
    std::ofstream(path_, std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  ~InputFile() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// Runs `read`, accepting a plora::Error as the reader's refusal.
template <class F>
void refused_or_read(F&& read) {
  try {
    read();
  } catch (const plora::Error&) {
  }
}

/// safetensors files (validated, then every tensor loaded as fp32 and as
/// integers) and the training checkpoints stored in them.
inline void safetensors(Bytes bytes) {
  const InputFile input(bytes, ".safetensors");
  const std::filesystem::path& path = input.path();
  refused_or_read([&] {
    const auto file = io::SafetensorsFile::open(path);
    for (const auto& name : file.names()) {
      refused_or_read([&] { (void)file.load(name); });
      refused_or_read([&] { (void)file.load_ints(name); });
    }
  });
  refused_or_read([&] { (void)read_checkpoint(path); });
}

/// The directory of the tiny ViT or DeBERTa-v2 checkpoint (config.json,
/// model.safetensors) that tools/make_fuzz_inputs.py writes.
inline std::filesystem::path tiny_checkpoint(std::string_view model) {
  return std::filesystem::path(PLORA_TEST_DATA_DIR) / "fuzz" / "model_configs" / model;
}

/// The JSON files a runner reads: config.json (ViT, DeBERTa-v2; a config
/// that parses then builds its model from the tiny checkpoint's weights, so
/// that what a config sizes is checked against what a checkpoint holds),
/// preprocessor_config.json, ratios.json.
inline void json_files(Bytes bytes) {
  if (bytes.empty()) return;
  const InputFile input(bytes.subspan(1), ".json");
  const std::filesystem::path& path = input.path();
  refused_or_read([&] {
    switch (bytes[0] % 4) {
      case 0: (void)load_vit<cpu, Lora<cpu>>(tiny_checkpoint("vit"), io::load_vit_config(path)); break;
      case 1: (void)load_deberta_v2<cpu, Lora<cpu>>(tiny_checkpoint("deberta"), io::load_deberta_v2_config(path)); break;
      case 2: (void)io::load_preprocessor_config(path); break;
      default: (void)io::load_ratios(path, {{"vit.encoder.layer.0.attention.attention.query", 4, 4}}); break;
    }
  });
}

/// Image files (PNG, JPEG, BMP) and the ViT preprocessing of them, to a size
/// of 1-64 x 1-64 pixels that the first two bytes pick.
inline void images(Bytes bytes) {
  if (bytes.size() < 2) return;
  io::PreprocessorConfig config;
  config.height = 1 + bytes[0] % 64;
  config.width = 1 + bytes[1] % 64;
  const InputFile input(bytes.subspan(2), ".image");
  const std::filesystem::path& path = input.path();
  refused_or_read([&] { (void)io::preprocess(io::load_image(path), config, path.string()); });
}

/// Dataset files: each GLUE / SuperGLUE task's TSV or JSONL (its texts then
/// tokenised into a 16-token batch with the test SentencePiece model, as the
/// DeBERTa runner does), CIFAR-10 and CIFAR-100 binary batches, a pixel CSV
/// of 1 x 8 x 8 images, scikit-learn's digits file (gzip or plain CSV).
inline void datasets(Bytes bytes) {
  if (bytes.empty()) return;
  static const DebertaV2Tokenizer tokenizer(std::filesystem::path(PLORA_TEST_DATA_DIR) / "spm_tiny.model");
  const auto& tasks = glue_tasks();
  const std::size_t choice = bytes[0] % (tasks.size() + 4);
  const InputFile input(bytes.subspan(1), ".data");
  const std::filesystem::path& path = input.path();
  refused_or_read([&] {
    if (choice < tasks.size()) {
      std::vector<std::string> a, b;
      for (const TextExample& example : read_glue(tasks[choice].task, path)) {
        a.push_back(example.a);
        if (tasks[choice].pair) b.push_back(example.b);
      }
      (void)tokenizer.encode_batch(a, b, 16);
    } else if (choice == tasks.size()) {
      (void)io::load_cifar10({path});
    } else if (choice == tasks.size() + 1) {
      (void)io::load_cifar100(path);
    } else if (choice == tasks.size() + 2) {
      (void)io::load_pixel_csv(path, 1, 8, 8, io::sklearn_digits_preprocessor());
    } else {
      (void)io::load_sklearn_digits(path);
    }
  });
}

/// Hugging Face model checkpoints (model.safetensors) for the tiny ViT (first
/// byte even) or DeBERTa-v2 (odd) config.json of tiny_checkpoint.
inline void model_checkpoints(Bytes bytes) {
  if (bytes.empty()) return;
  static const ViTConfig vit = io::load_vit_config(tiny_checkpoint("vit") / "config.json");
  static const DebertaV2Config deberta = io::load_deberta_v2_config(tiny_checkpoint("deberta") / "config.json");
  const InputFile input(bytes.subspan(1), ".safetensors");
  const std::filesystem::path& path = input.path();
  refused_or_read([&] {
    if (bytes[0] % 2 == 0) {
      (void)load_vit<cpu, Lora<cpu>>(path, vit);
    } else {
      (void)load_deberta_v2<cpu, Lora<cpu>>(path, deberta);
    }
  });
}

/// SentencePiece model files (a DeBERTa checkpoint's spm.model), then the
/// tokenisation of a short text pair with each model that loads.
inline void tokenizer_models(Bytes bytes) {
  const InputFile input(bytes, ".model");
  const std::filesystem::path& path = input.path();
  refused_or_read([&] {
    static const std::string a[] = {"Tokenised by a fuzzed model: 12 words, éè ü 東京."};
    static const std::string b[] = {"[SEP] and [PAD] as text."};
    (void)DebertaV2Tokenizer(path).encode_batch(a, b, 32);
  });
}

using Target = void (*)(Bytes);

/// Every target, by the name that tests/data/fuzz/<name>/ and scripts/fuzz use.
inline constexpr std::array<std::pair<std::string_view, Target>, 6> kTargets{{{"safetensors", &safetensors},
                                                                              {"json_files", &json_files},
                                                                              {"images", &images},
                                                                              {"datasets", &datasets},
                                                                              {"model_checkpoints", &model_checkpoints},
                                                                              {"tokenizer_models", &tokenizer_models}}};

}  // namespace plora::fuzz
