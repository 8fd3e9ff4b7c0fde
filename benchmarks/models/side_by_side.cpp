// plora's side of tools/bench_vs_peft: loads a Hugging Face checkpoint
// directory (config.json + model.safetensors, the files the PyTorch side loads
// too) — a ViTForImageClassification or a DebertaV2ForSequenceClassification,
// told apart by config.json's model_type — and a batch file, runs one mode
// and prints one JSON object on stdout:
//   {"mode", "threads", "warmup", "step_seconds": [...], "peak_rss_mib",
//    "first_loss" (training modes) | "first_logits" (forward), "trainable"}
// Modes (the same on both sides, tools/bench_vs_peft.py):
//   forward     eval forward of the batch
//   lora        LoRA r = 8, alpha 16 on the query + value projections, head
//               trained (ViT: classifier; DeBERTa: pooler + classifier), AdamW
//   partial     Partial-LoRA with the row / column masks of --masks (a file
//               written by the write-masks mode), otherwise as lora
//   full        full fine-tuning of every encoder linear weight + head, AdamW
//   write-masks writes the Partial-LoRA masks at density --density (balanced
//               Bernoulli, seed 7, stream = the site name) to --masks and exits
// Batch files: ViT "pixels" [batch, C*H*W] F32 + "labels"; DeBERTa
// "input_ids" and "attention_mask" [batch, seq_len] integers + "labels".
// Usage: side_by_side <checkpoint-dir> <batch.safetensors> <mode>
//        [--steps N] [--warmup N] [--threads N] [--masks FILE] [--density P]
// The first step's loss (or the forward's logits) validates the computation
// against the PyTorch side before any timing is compared.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_support.hpp"
#include "gemm_kernel.hpp"
#include "plora/adapters/full_delta.hpp"
#include "plora/adapters/lora.hpp"
#include "plora/adapters/partial.hpp"
#include "plora/io/deberta_checkpoint.hpp"
#include "plora/io/safetensors.hpp"
#include "plora/io/vit_checkpoint.hpp"
#include "plora/masks/bernoulli.hpp"
#include "plora/models/sites.hpp"
#include "plora/train/adamw.hpp"

namespace {
using namespace plora;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Options {
  std::filesystem::path checkpoint, batch;
  std::string mode;
  int steps = 5, warmup = 1, threads = 2;
  std::filesystem::path masks;
  double density = 0.13;
};

Options parse(int argc, char** argv) {
  check<ValueError>(argc >= 4, "usage: side_by_side <checkpoint-dir> <batch.safetensors> <mode> [--steps N] "
                               "[--warmup N] [--threads N] [--masks FILE] [--density P]");
  Options o;
  o.checkpoint = argv[1];
  o.batch = argv[2];
  o.mode = argv[3];
  for (int i = 4; i < argc; i += 2) {
    const std::string flag = argv[i];
    check<ValueError>(i + 1 < argc, "side_by_side: ", flag, " needs a value");
    const std::string value = argv[i + 1];
    if (flag == "--steps") o.steps = std::stoi(value);
    else if (flag == "--warmup") o.warmup = std::stoi(value);
    else if (flag == "--threads") o.threads = std::stoi(value);
    else if (flag == "--masks") o.masks = value;
    else if (flag == "--density") o.density = std::stod(value);
    else throw ValueError("side_by_side: unknown option " + flag);
  }
  check<ValueError>(o.steps >= 1 && o.warmup >= 0 && o.threads >= 1, "side_by_side: need steps >= 1, warmup >= 0, threads >= 1");
  return o;
}

std::vector<std::int32_t> load_int32(const io::SafetensorsFile& file, const std::string& name) {
  std::vector<std::int32_t> out;
  for (const auto value : file.load_ints(name)) out.push_back(static_cast<std::int32_t>(value));
  return out;
}

/// What differs between the two model families; everything else is shared.
struct VitFamily {
  template <class A>
  using Model = Vit<cpu, A>;
  inline static const std::vector<std::string> lora_targets = {"query", "value"};
  inline static const std::vector<std::string> all_linear = {"query", "key", "value", "dense"};

  template <class A>
  static Model<A> load(const std::filesystem::path& checkpoint) {
    return load_vit_checkpoint<cpu, A>(checkpoint);
  }
  static ImageBatch load_batch(const io::SafetensorsFile& file) {
    return {file.load("pixels"), load_int32(file, "labels")};
  }
};

struct DebertaFamily {
  template <class A>
  using Model = DebertaV2<cpu, A>;
  inline static const std::vector<std::string> lora_targets = {"query_proj", "value_proj"};
  inline static const std::vector<std::string> all_linear = {"query_proj", "key_proj", "value_proj", "dense"};

  template <class A>
  static Model<A> load(const std::filesystem::path& checkpoint) {
    return load_deberta_v2<cpu, A>(checkpoint);
  }
  static TokenBatch load_batch(const io::SafetensorsFile& file) {
    const std::vector<Index>& shape = file.info("input_ids").shape;
    check<ShapeError>(shape.size() == 2, "side_by_side: input_ids in '", file.path().string(),
                      "' must be [batch, seq_len]");
    TokenBatch batch;
    batch.batch = shape[0];
    batch.seq_len = shape[1];
    batch.input_ids = load_int32(file, "input_ids");
    batch.attention_mask = load_int32(file, "attention_mask");
    batch.labels = load_int32(file, "labels");
    return batch;
  }
};

constexpr LoraConfig kLora{.rank = 8, .alpha = 16};

RowColMask sample_mask(const std::string& site, Index out, Index in, double density) {
  return PartialMask{}.sample({.out = out, .in = in, .ratio = density, .seed = 7, .stream = stream_id(site)});
}

template <class Family>
void write_masks(const Options& o) {
  auto model = Family::template load<Lora<cpu>>(o.checkpoint);
  json sites = json::array();
  for (const auto& name : matched_sites(model, std::span(Family::lora_targets))) {
    auto& site = model.site(name);
    const RowColMask mask = sample_mask(name, site.out_features(), site.in_features(), o.density);
    sites.push_back({{"name", name}, {"out", site.out_features()}, {"in", site.in_features()},
                     {"rows", mask.rows}, {"cols", mask.cols}});
  }
  std::ofstream(o.masks) << json{{"density", o.density}, {"sites", sites}}.dump() << "\n";
}

std::map<std::string, RowColMask> read_masks(const std::filesystem::path& path) {
  std::ifstream in(path);
  check<IoError>(static_cast<bool>(in), "side_by_side: cannot read masks file '", path.string(), "'");
  std::map<std::string, RowColMask> out;
  const json file = json::parse(in);
  for (const auto& s : file.at("sites"))
    out[s.at("name").get<std::string>()] = {s.at("rows").get<std::vector<std::int32_t>>(),
                                            s.at("cols").get<std::vector<std::int32_t>>()};
  return out;
}

/// Times `warmup` + `steps` calls of `step`; returns the timed seconds.
template <class Step>
std::vector<double> time_steps(const Options& o, Step&& step) {
  std::vector<double> seconds;
  for (int i = 0; i < o.warmup + o.steps; ++i) {
    const auto start = Clock::now();
    step();
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    if (i >= o.warmup) seconds.push_back(s);
  }
  return seconds;
}

template <class Family, class A, class Batch, class Factory>
json run(const Options& o, const Batch& batch, const std::vector<std::string>& targets, Factory&& factory) {
  auto model = Family::template load<A>(o.checkpoint);
  json out;
  if (o.mode == "forward") {
    model.set_training(false);
    out["first_logits"] = to_host<cpu>(model.forward(batch)).values();
    out["step_seconds"] = time_steps(o, [&] { (void)model.forward(batch); });
    return out;
  }
  attach_adapters(model, std::span(targets), factory);
  model.set_training(true);
  AdamW<cpu> optimizer(AdamWConfig{.lr = 1e-4});
  ParameterList<Host> params = model.parameters();
  Index trainable = 0;
  for (const auto& p : params) trainable += p.value.size();
  bool first = true;
  out["step_seconds"] = time_steps(o, [&] {
    model.zero_grad();
    const float loss = model.forward_backward(batch);
    if (first) out["first_loss"] = loss;
    first = false;
    optimizer.step(params);
  });
  out["trainable"] = trainable;
  return out;
}

template <class Family>
json drive_mode(const Options& o) {
  const auto batch = Family::load_batch(io::SafetensorsFile::open(o.batch));
  if (o.mode == "forward" || o.mode == "lora")
    return run<Family, Lora<cpu>>(o, batch, Family::lora_targets, [](const std::string& site, Index m, Index n) {
      return Lora<cpu>(m, n, kLora, RandomStream(0, stream_id(site)));
    });
  if (o.mode == "partial") {
    const auto masks = read_masks(o.masks);
    return run<Family, PartialLora<cpu>>(o, batch, Family::lora_targets, [&](const std::string& site, Index m, Index n) {
      const auto it = masks.find(site);
      check<ValueError>(it != masks.end(), "side_by_side: masks file '", o.masks.string(), "' has no site '", site, "'");
      return PartialLora<cpu>(m, n, {.inner = kLora, .kept_rows = it->second.rows, .kept_cols = it->second.cols},
                              RandomStream(0, stream_id(site)));
    });
  }
  if (o.mode == "full")
    return run<Family, FullDelta<cpu>>(o, batch, Family::all_linear, [](const std::string&, Index m, Index n) {
      return FullDelta<cpu>(m, n, {}, RandomStream(0, 0));
    });
  throw ValueError("side_by_side: unknown mode '" + o.mode + "' (forward, lora, partial, full, write-masks)");
}

template <class Family>
int drive(const Options& o) {
  if (o.mode == "write-masks") {
    write_masks<Family>(o);
    return 0;
  }
  json out = drive_mode<Family>(o);
  out["mode"] = o.mode;
  out["threads"] = o.threads;
  out["warmup"] = o.warmup;
  out["peak_rss_mib"] = bench::peak_rss_mib();
  out["gemm_kernel"] = bench::gemm_kernel_description();
  std::cout << out.dump() << std::endl;
  return 0;
}

/// config.json's model_type picks the family.
int drive(const Options& o) {
  cpu::set_threads(o.threads);
  const std::filesystem::path config = o.checkpoint / "config.json";
  std::ifstream in(config);
  check<IoError>(static_cast<bool>(in), "side_by_side: cannot read '", config.string(), "'");
  const std::string model_type = json::parse(in).value("model_type", "");
  if (model_type == "vit") return drive<VitFamily>(o);
  if (model_type == "deberta-v2") return drive<DebertaFamily>(o);
  throw ValueError("side_by_side: '" + config.string() + "' has model_type '" + model_type +
                   "', expected vit or deberta-v2");
}
}  // namespace

int main(int argc, char** argv) {
  try {
    return drive(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "side_by_side: %s\n", e.what());
    return 1;
  }
}
