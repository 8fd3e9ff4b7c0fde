// The g++ side of the model-level CUDA test: fixture loading (io/, nlohmann-json,
// zlib) and every scenario instantiated on plora::cpu.
#include "models_cpu_reference.hpp"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "plora/backend/cpu/cpu.hpp"
#include "plora/io/hf_config.hpp"
#include "plora/io/safetensors.hpp"
#include "plora/io/vit_checkpoint.hpp"
#include "plora/train/metrics.hpp"

namespace plora::test::models::reference {
namespace {

const std::filesystem::path kData = PLORA_CUDA_MODELS_DATA_DIR;

std::vector<std::int32_t> ints(const io::SafetensorsFile& file, const std::string& name) {
  const auto values = file.load_ints(name);
  return {values.begin(), values.end()};
}

}  // namespace

VitFixture load_vit_fixture() {
  const std::filesystem::path dir = kData / "vit_a";
  VitFixture fx;
  fx.config = load_vit_checkpoint_config(dir);
  const ViTConfig& c = fx.config;
  const io::SafetensorsFile file = io::SafetensorsFile::open(dir / "model.safetensors");
  const WeightSource source = vit_weight_source(file);
  // Building the CPU model records exactly the tensors the constructor asks for.
  Vit<cpu, Lora<cpu>> model(c, [&](const std::string& key, Index rows, Index cols) {
    std::optional<HostMatrix> m = source(key, rows, cols);
    check<IoError>(m.has_value(), "the ViT fixture has no tensor '", key, "'");  // its classifier included
    fx.weights.insert_or_assign(key, *m);
    return m;
  });

  const io::SafetensorsFile reference = io::SafetensorsFile::open(dir / "reference.safetensors");
  const Index n = reference.info("pixel_values").shape.front(), pixels = c.num_channels * c.image_size * c.image_size;
  fx.batch.pixels = reference.load("pixel_values", n, pixels);
  const HostMatrix labels = reference.load("labels");
  for (const float label : labels.values()) fx.batch.labels.push_back(static_cast<std::int32_t>(label));
  fx.logits = reference.load("logits", n, c.num_labels);

  fx.shots.pixels = random_matrix(16, pixels, 2024);
  fx.shots.labels = metrics::argmax_rows(to_host<cpu>(model.forward(fx.shots)).view());
  return fx;
}

DebertaFixture load_deberta_fixture() {
  std::ifstream json_file(kData / "deberta_rel.json");
  check<IoError>(json_file.good(), "cannot read ", (kData / "deberta_rel.json").string());
  const nlohmann::json json = nlohmann::json::parse(json_file);
  DebertaFixture fx;
  fx.config = io::parse_deberta_v2_config(json, "deberta_rel.json");
  fx.lora_targets = json["lora_targets"].get<std::vector<std::string>>();
  const io::SafetensorsFile file = io::SafetensorsFile::open(kData / "deberta_rel.safetensors");
  // Building the CPU model records the tensors it asks for, in the shapes it asks for.
  const DebertaV2<cpu, Lora<cpu>> model(
      fx.config, [&](const std::string& key, Index rows, Index cols) -> std::optional<HostMatrix> {
        if (!file.contains(key)) return std::nullopt;
        HostMatrix m = file.load(key, rows, cols);
        fx.weights.insert_or_assign(key, m);
        return m;
      });
  const auto& shape = file.info("ref.input_ids").shape;
  fx.batch.batch = shape[0];
  fx.batch.seq_len = shape[1];
  fx.batch.input_ids = ints(file, "ref.input_ids");
  fx.batch.attention_mask = ints(file, "ref.attention_mask");
  fx.batch.token_type_ids = ints(file, "ref.token_type_ids");
  fx.batch.labels = ints(file, "ref.labels");
  fx.logits = file.load("ref.logits");
  return fx;
}

HostMatrix vit_plain_logits(const VitFixture& fixture) {
  auto model = scenario::build_vit<cpu, Lora<cpu>>(fixture);
  return to_host<cpu>(model.forward(fixture.batch));
}
HostMatrix deberta_plain_logits(const DebertaFixture& fixture) {
  auto model = scenario::build_deberta<cpu, Lora<cpu>>(fixture);
  return to_host<cpu>(model.forward(fixture.batch));
}

Tensors adapter_init() { return scenario::adapter_init<cpu>(); }
Tensors adapter_steps() { return scenario::adapter_steps<cpu>(); }
Tensors layers() { return scenario::layers<cpu>(); }
Tensors vit(const VitFixture& fixture) { return scenario::vit<cpu>(fixture); }
Tensors deberta(const DebertaFixture& fixture) { return scenario::deberta<cpu>(fixture); }
Tensors vit_training(const VitFixture& fixture) { return scenario::vit_training<cpu>(fixture); }
Tensors vit_svd_extraction(const VitFixture& fixture) { return scenario::vit_svd_extraction<cpu>(fixture); }

}  // namespace plora::test::models::reference
