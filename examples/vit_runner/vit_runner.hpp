#pragma once
// vit_runner: fine-tunes a Hugging Face ViT checkpoint on an image dataset
// with LoRA, AdaLoRA, Partial-LoRA, Partial-AdaLoRA, full fine-tuning or
// Random Masking (common/pipeline.hpp does the work). Without --checkpoint it
// runs the built-in digits demo (digits_demo.hpp). Templated on the backend:
// main.cpp instantiates it with plora::cpu, main_cuda.cu with plora::cuda.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <iostream>
#include <memory>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "common/options.hpp"
#include "common/pipeline.hpp"
#include "plora/core/error.hpp"
#include "plora/core/rng.hpp"
#include "plora/io/datasets.hpp"
#include "plora/io/hf_config.hpp"
#include "plora/io/vit_checkpoint.hpp"
#include "vit_runner/digits_demo.hpp"
#include "vit_runner/vit_task.hpp"

namespace plora::runner {

/// The ViT runner's own options: model and data.
struct VitOptions {
  std::filesystem::path checkpoint;
  std::string dataset;
  std::filesystem::path data;
  std::vector<Index> csv_shape;
  double test_fraction = 0.2;
  Index max_train = 0;
  Index max_test = 0;
  bool keep_head = false;
  std::filesystem::path pretrained_dir;  ///< demo only; empty = <output>/pretrained
  DigitsPretraining pretraining;
};

inline void add_vit_options(CLI::App& app, VitOptions& v) {
  const std::string group = "Model and data (no --checkpoint: the built-in digits demo)";
  app.add_option("--checkpoint", v.checkpoint,
                 "Hugging Face ViT checkpoint directory: model.safetensors + config.json (+ "
                 "preprocessor_config.json; ViTImageProcessor's defaults when absent)")
      ->type_name("DIR")
      ->group(group);
  app.add_option("--dataset", v.dataset,
                 "Dataset type: cifar10 (--data: directory of data_batch_{1..5}.bin + test_batch.bin), cifar100 "
                 "(directory of train.bin + test.bin, fine labels), imagefolder (root/<class>/<image>, or "
                 "root/train and root/test of those), csv (label,pixel... rows; needs --csv-shape), digits "
                 "(scikit-learn's digits.csv.gz; --data optional)")
      ->check(CLI::IsMember({"cifar10", "cifar100", "imagefolder", "csv", "digits"}))
      ->group(group);
  app.add_option("--data", v.data, "Path of the dataset (see --dataset)")->type_name("PATH")->group(group);
  app.add_option("--csv-shape", v.csv_shape, "csv only: channels, height and width of each image")
      ->expected(3)
      ->delimiter(',')
      ->default_str("")
      ->type_name("C,H,W")
      ->group(group);
  app.add_option("--test-fraction", v.test_fraction,
                 "Fraction of each class held out for testing (stratified, fixed seed) when the dataset has no "
                 "test split of its own")
      ->group(group);
  app.add_option("--max-train", v.max_train,
                 "Use at most this many training examples (0 = all); in the demo also of the pretraining")
      ->check(kNonNegative)
      ->group(group);
  app.add_option("--max-test", v.max_test, "Use at most this many test examples (0 = all)")
      ->check(kNonNegative)
      ->group(group);
  app.add_flag("--keep-head", v.keep_head,
               "Keep the checkpoint's classifier; it must have one row per dataset class (default: a new head)")
      ->group(group);
  const std::string demo = "Built-in demo (pretrain on digits 0-4, fine-tune on digits 5-9)";
  app.add_option("--pretrained-dir", v.pretrained_dir,
                 "Where the demo's pretrained checkpoint is cached (default: <output>/pretrained); share it "
                 "between runs to pretrain once")
      ->type_name("DIR")
      ->group(demo);
  app.add_option("--pretrain-epochs", v.pretraining.epochs, "Epochs of the demo's pretraining")
      ->check(kPositive)
      ->group(demo);
}

inline void validate(const VitOptions& v) {
  check<ValueError>(v.test_fraction > 0.0 && v.test_fraction < 1.0, "--test-fraction ", v.test_fraction,
                    " is outside (0, 1)");
  if (v.checkpoint.empty()) {
    check<ValueError>(v.dataset.empty() && v.data.empty(),
                      "--dataset / --data need --checkpoint (without one the runner runs its built-in digits demo)");
    check<ValueError>(!v.keep_head && v.test_fraction == VitOptions{}.test_fraction,
                      v.keep_head ? "--keep-head" : "--test-fraction",
                      " applies only with --checkpoint (the built-in demo has its own head and split)");
    return;
  }
  const std::pair<const char*, bool> demo_options[] = {
      {"--pretrained-dir", !v.pretrained_dir.empty()},
      {"--pretrain-epochs", v.pretraining.epochs != DigitsPretraining{}.epochs}};
  for (const auto& [name, given] : demo_options)
    check<ValueError>(!given, name, " applies only to the built-in demo, not with --checkpoint");
  check<IoError>(std::filesystem::is_directory(v.checkpoint), "checkpoint directory '", v.checkpoint.string(),
                 "' does not exist");
  check<ValueError>(!v.dataset.empty(), "--checkpoint needs --dataset (cifar10, cifar100, imagefolder, csv or digits)");
  check<ValueError>(!v.data.empty() || v.dataset == "digits", "--dataset ", v.dataset, " needs --data PATH");
  check<ValueError>(v.dataset != "csv" || v.csv_shape.size() == 3, "--dataset csv needs --csv-shape C,H,W");
  check<ValueError>(v.dataset == "csv" || v.csv_shape.empty(), "--csv-shape applies only to --dataset csv");
}

/// {train, test} of the dataset the options name, preprocessed per `pre`.
inline std::pair<io::ImageDataset, io::ImageDataset> load_vit_data(const VitOptions& v, io::PreprocessorConfig pre) {
  namespace fs = std::filesystem;
  const auto require = [](const fs::path& path) {
    check<IoError>(fs::exists(path), "dataset file '", path.string(), "' does not exist");
    return path;
  };
  const bool split_folders =
      v.dataset == "imagefolder" && fs::is_directory(v.data / "train") && fs::is_directory(v.data / "test");
  check<ValueError>(!(split_folders || v.dataset.starts_with("cifar")) || v.test_fraction == VitOptions{}.test_fraction,
                    "--test-fraction applies only to a dataset without a test split of its own; ", v.data.string(),
                    " has one");
  if (v.dataset == "cifar10") {
    std::vector<fs::path> files;
    for (int i = 1; i <= 5; ++i) files.push_back(require(v.data / ("data_batch_" + std::to_string(i) + ".bin")));
    return {io::load_cifar10(files, pre, v.max_train),
            io::load_cifar10({require(v.data / "test_batch.bin")}, pre, v.max_test)};
  }
  if (v.dataset == "cifar100")
    return {io::load_cifar100(require(v.data / "train.bin"), io::CifarLabels::Fine, pre, v.max_train),
            io::load_cifar100(require(v.data / "test.bin"), io::CifarLabels::Fine, pre, v.max_test)};
  std::pair<io::ImageDataset, io::ImageDataset> split;
  if (split_folders) {
    split = {io::load_image_folder(v.data / "train", pre), io::load_image_folder(v.data / "test", pre)};
    check<IoError>(split.first.class_names == split.second.class_names, "image folder '", v.data.string(),
                   "': train/ and test/ have different class sub-directories");
  } else {
    io::ImageDataset all;
    if (v.dataset == "imagefolder") {
      all = io::load_image_folder(v.data, pre);
    } else if (v.dataset == "csv") {
      all = io::load_pixel_csv(require(v.data), v.csv_shape[0], v.csv_shape[1], v.csv_shape[2], pre);
    } else {
      pre.rescale_factor = io::sklearn_digits_preprocessor().rescale_factor;  // digits pixels are 0..16
      all = io::load_sklearn_digits(v.data.empty() ? io::kSklearnDigitsPath : require(v.data), pre);
    }
    split = io::split(all, v.test_fraction, 0);
  }
  return {limited(std::move(split.first), v.max_train), limited(std::move(split.second), v.max_test)};
}

/// The task of a user-given checkpoint directory and dataset.
template <Backend B>
std::unique_ptr<VitTask<B>> checkpoint_task(const RunOptions& o, const VitOptions& v) {
  const std::filesystem::path pre_file = v.checkpoint / "preprocessor_config.json";
  const ViTConfig stored = io::load_vit_config(v.checkpoint / "config.json");
  io::PreprocessorConfig pre;
  if (std::filesystem::is_regular_file(pre_file)) {
    pre = io::load_preprocessor_config(pre_file);
  } else {
    pre.height = pre.width = stored.image_size;
  }
  // Every image is decoded and resized before the shapes can be compared: compare the sizes asked for first.
  if (pre.do_resize) {
    const Index asked = pre.shortest_edge > 0 ? pre.shortest_edge : pre.height;
    check<ValueError>(asked == stored.image_size && (pre.shortest_edge > 0 || pre.width == stored.image_size), "'",
                      pre_file.string(), "' resizes images to ",
                      pre.shortest_edge > 0 ? "a shortest edge of " + std::to_string(pre.shortest_edge)
                                            : std::to_string(pre.height) + " x " + std::to_string(pre.width),
                      " but the checkpoint's image_size is ", stored.image_size);
  }
  auto [train, test] = load_vit_data(v, pre);
  check<ValueError>(train.num_classes == test.num_classes, "dataset '", v.data.string(), "': the training set has ",
                    train.num_classes, " classes, the test set ", test.num_classes);
  check<ValueError>(train.num_classes >= 2, "dataset '", v.data.string(), "' has ", train.num_classes,
                    " class; a classifier needs at least 2");
  check<ValueError>(train.channels == stored.num_channels && train.height == stored.image_size &&
                        train.width == stored.image_size,
                    "dataset images preprocess to ", train.channels, " x ", train.height, " x ", train.width,
                    " but the checkpoint '", v.checkpoint.string(), "' takes ", stored.num_channels, " x ",
                    stored.image_size, " x ", stored.image_size,
                    " (adjust size in preprocessor_config.json or use a matching checkpoint)");
  ViTConfig config = load_vit_checkpoint_config(v.checkpoint, train.num_classes);
  const nlohmann::ordered_json data{{"type", v.dataset}, {"path", v.data.string()}};
  return std::make_unique<VitTask<B>>(v.checkpoint, std::move(config), std::move(train), std::move(test), o.batch,
                                      o.seed, v.keep_head, data);
}

/// Runs the runner with parsed options; throws plora::Error on bad input.
template <Backend B>
nlohmann::ordered_json run_vit(const RunOptions& o, const VitOptions& v, Clock::time_point start, std::ostream& log) {
  validate(o);
  validate(v);
  prepare_output(o.output);
  set_backend_threads<B>(o.threads);
  nlohmann::ordered_json report;
  std::unique_ptr<VitTask<B>> task;
  if (v.checkpoint.empty()) {
    const std::filesystem::path dir = v.pretrained_dir.empty() ? o.output / "pretrained" : v.pretrained_dir;
    DigitsPretraining pretraining = v.pretraining;
    pretraining.max_examples = v.max_train;
    DigitsDemo demo = prepare_digits_demo<B>(dir, pretraining, o.quiet, log);
    ViTConfig config = load_vit_checkpoint_config(demo.checkpoint, demo.train.num_classes);
    const nlohmann::ordered_json data{{"type", "digits 5-9 (built-in demo)"},
                                      {"path", io::kSklearnDigitsPath.string()}};
    report["pretraining"] = std::move(demo.pretraining);
    task = std::make_unique<VitTask<B>>(demo.checkpoint, std::move(config), limited(std::move(demo.train), v.max_train),
                                        limited(std::move(demo.test), v.max_test), o.batch, o.seed, false, data);
  } else {
    task = checkpoint_task<B>(o, v);
  }
  return run_pipeline<B>(o, *task, std::move(report), start, log);
}

/// The whole program: parse, run, map errors to exit codes (CLI11's for bad
/// command lines, 1 for every other failure, with the message on stderr).
template <Backend B>
int vit_runner_main(int argc, char** argv) {
  const auto start = Clock::now();
  CLI::App app{
      "vit_runner: fine-tune a Hugging Face ViT with LoRA, AdaLoRA, Partial-LoRA (sparse low-rank adapters "
      "whose per-layer ratios are extracted from the pretrained weights), full fine-tuning or Random Masking. "
      "With no arguments it runs a built-in demo on scikit-learn's digits: pretrain a small ViT on digits 0-4, "
      "then fine-tune it on digits 5-9 with Partial-LoRA."};
  app.footer(
      "Outputs in --output: report.json, adapter_model.safetensors + adapter_config.json (PEFT names), "
      "ratios.json (when extracted), ratios.svg, params.svg.\nExit codes: 0 success, 1 invalid input or failure "
      "(message on stderr), other non-zero codes for malformed command lines.");
  RunOptions options;
  VitOptions vit;
  add_run_options(app, options);
  add_vit_options(app, vit);
  return run_main(app, "vit_runner", argc, argv, [&] { run_vit<B>(options, vit, start, std::cout); });
}

}  // namespace plora::runner
