// plora's side of tools/bench_vs_peft: loads a Hugging Face ViT checkpoint
// directory (config.json + model.safetensors, the file the PyTorch side loads
// too) and a batch file, runs one mode and prints one JSON object on stdout:
//   {"mode", "threads", "warmup", "step_seconds": [...], "peak_rss_mib",
//    "first_loss" (training modes) | "first_logits" (forward), "trainable"}
// Modes (the same on both sides, tools/bench_vs_peft.py):
//   forward     eval forward of the batch
//   lora        LoRA r = 8, alpha 16 on query + value, classifier trained, AdamW
//   partial     Partial-LoRA with the row / column masks of --masks (a file
//               written by the write-masks mode), otherwise as lora
//   full        full fine-tuning of every encoder linear weight + classifier, AdamW
//   write-masks writes the Partial-LoRA masks at density --density (balanced
//               Bernoulli, seed 7, stream = the site name) to --masks and exits
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
#include "plora/adapters/full_delta.hpp"
#include "plora/adapters/lora.hpp"
#include "plora/adapters/partial.hpp"
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

/// pixels [batch, C*H*W] (F32) and labels [batch] (integers) from the PyTorch side.
ImageBatch load_batch(const std::filesystem::path& path) {
  const io::SafetensorsFile file = io::SafetensorsFile::open(path);
  ImageBatch batch{file.load("pixels"), {}};
  for (const auto label : file.load_ints("labels")) batch.labels.push_back(static_cast<std::int32_t>(label));
  return batch;
}

const std::vector<std::string> kLoraTargets = {"query", "value"};
const std::vector<std::string> kAllLinear = {"query", "key", "value", "dense"};
constexpr LoraConfig kLora{.rank = 8, .alpha = 16};

RowColMask sample_mask(const std::string& site, Index out, Index in, double density) {
  return PartialMask{}.sample({.out = out, .in = in, .ratio = density, .seed = 7, .stream = stream_id(site)});
}

void write_masks(const Options& o, const ViTConfig& config) {
  auto model = load_vit_checkpoint<cpu, Lora<cpu>>(o.checkpoint, config.num_labels);
  json sites = json::array();
  for (const auto& name : matched_sites(model, std::span(kLoraTargets))) {
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

template <class A, class Factory>
json run(const Options& o, const ViTConfig& config, const ImageBatch& batch, const std::vector<std::string>& targets,
         Factory&& factory) {
  auto model = load_vit_checkpoint<cpu, A>(o.checkpoint, config.num_labels);
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

int drive(const Options& o) {
  cpu::set_threads(o.threads);
  const ViTConfig config = load_vit_checkpoint_config(o.checkpoint);
  if (o.mode == "write-masks") {
    write_masks(o, config);
    return 0;
  }
  const ImageBatch batch = load_batch(o.batch);
  json out;
  if (o.mode == "forward" || o.mode == "lora") {
    out = run<Lora<cpu>>(o, config, batch, kLoraTargets, [](const std::string& site, Index m, Index n) {
      return Lora<cpu>(m, n, kLora, RandomStream(0, stream_id(site)));
    });
  } else if (o.mode == "partial") {
    const auto masks = read_masks(o.masks);
    out = run<PartialLora<cpu>>(o, config, batch, kLoraTargets, [&](const std::string& site, Index m, Index n) {
      const auto it = masks.find(site);
      check<ValueError>(it != masks.end(), "side_by_side: masks file '", o.masks.string(), "' has no site '", site, "'");
      return PartialLora<cpu>(m, n, {.inner = kLora, .kept_rows = it->second.rows, .kept_cols = it->second.cols},
                              RandomStream(0, stream_id(site)));
    });
  } else if (o.mode == "full") {
    out = run<FullDelta<cpu>>(o, config, batch, kAllLinear, [](const std::string&, Index m, Index n) {
      return FullDelta<cpu>(m, n, {}, RandomStream(0, 0));
    });
  } else {
    throw ValueError("side_by_side: unknown mode '" + o.mode + "' (forward, lora, partial, full, write-masks)");
  }
  out["mode"] = o.mode;
  out["threads"] = o.threads;
  out["warmup"] = o.warmup;
  out["peak_rss_mib"] = bench::peak_rss_mib();
  std::cout << out.dump() << std::endl;
  return 0;
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
