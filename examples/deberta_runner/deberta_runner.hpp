#pragma once
// deberta_runner: fine-tunes a Hugging Face DeBERTa-v2/v3 checkpoint on a GLUE
// or SuperGLUE task with LoRA, AdaLoRA, Partial-LoRA, Partial-AdaLoRA, full
// fine-tuning or Random Masking (common/pipeline.hpp does the work, as for the
// ViT runner). Without --checkpoint it runs the built-in license-sentences demo
// (licenses_demo.hpp). Templated on the backend: main.cpp instantiates it with
// plora::cpu, main_cuda.cu with plora::cuda.
#include <CLI/CLI.hpp>

#include <exception>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "common/options.hpp"
#include "common/pipeline.hpp"
#include "deberta_runner/deberta_task.hpp"
#include "deberta_runner/licenses_demo.hpp"
#include "plora/core/error.hpp"
#include "plora/io/glue.hpp"
#include "plora/io/hf_config.hpp"

namespace plora::runner {

/// The DeBERTa runner's own options: model and data.
struct DebertaOptions {
  std::filesystem::path checkpoint;
  std::string task;
  std::filesystem::path data;
  Index max_length = 128;
  Index max_train = 0;
  Index max_test = 0;
  std::filesystem::path pretrained_dir;  ///< demo only; empty = <output>/pretrained
  LicensePretraining pretraining;
};

/// The shared options' defaults that differ for DeBERTa: PEFT's default
/// target_modules for deberta-v2 (query_proj, value_proj).
inline RunOptions deberta_run_defaults() {
  RunOptions o;
  o.targets = {"query_proj", "value_proj"};
  return o;
}

inline void add_deberta_options(CLI::App& app, DebertaOptions& d) {
  std::string tasks;
  for (const auto& t : glue_tasks()) tasks += (tasks.empty() ? "" : ", ") + t.name;
  const std::string group = "Model and data (no --checkpoint: the built-in license-sentences demo)";
  app.add_option("--checkpoint", d.checkpoint,
                 "Hugging Face DeBERTa-v2/v3 checkpoint directory: model.safetensors + config.json + spm.model "
                 "(e.g. microsoft/deberta-v3-base); pooler and classifier are trained, and created when absent")
      ->type_name("DIR")
      ->group(group);
  app.add_option("--task", d.task,
                 "GLUE / SuperGLUE task (needs --checkpoint and --data): " + tasks +
                     " (also sst-2, sts-b, mnli = mnli_matched, mnli-mm). The metric is GLUE's first for the task")
      ->type_name("NAME")
      ->group(group);
  app.add_option("--data", d.data,
                 "Directory of the task's files as GLUE ships them: train.tsv + dev.tsv (MNLI: dev_matched.tsv / "
                 "dev_mismatched.tsv; SuperGLUE COPA / WSC: train.jsonl + val.jsonl). dev is the test set")
      ->type_name("DIR")
      ->group(group);
  app.add_option("--max-length", d.max_length,
                 "Tokens per sequence including [CLS] / [SEP]; longer texts are truncated (pairs longest-first)")
      ->check(CLI::Range(Index{5}, Index{1} << 20))
      ->group(group);
  app.add_option("--max-train", d.max_train,
                 "Use at most this many training examples (0 = all); in the demo also of the pretraining")
      ->check(kNonNegative)
      ->group(group);
  app.add_option("--max-test", d.max_test, "Use at most this many test examples (0 = all)")
      ->check(kNonNegative)
      ->group(group);
  const std::string demo = "Built-in demo (pretrain on 5 licenses' sentences, fine-tune on 5 others)";
  app.add_option("--pretrained-dir", d.pretrained_dir,
                 "Where the demo's pretrained checkpoint (and its spm.model) is cached (default: "
                 "<output>/pretrained); share it between runs to pretrain once")
      ->type_name("DIR")
      ->group(demo);
  app.add_option("--pretrain-epochs", d.pretraining.epochs, "Epochs of the demo's pretraining")
      ->check(kPositive)
      ->group(demo);
  app.add_option("--pretrain-lr", d.pretraining.lr, "Peak learning rate of the demo's pretraining (AdamW)")
      ->check(kPositive)
      ->group(demo);
}

/// Checks the options and the checkpoint directory's files before anything
/// is loaded; returns the task when one is given.
inline std::optional<GlueTask> validate(const DebertaOptions& d) {
  if (d.checkpoint.empty()) {
    check<ValueError>(d.task.empty() && d.data.empty(),
                      "--task / --data need --checkpoint (without one the runner runs its built-in demo)");
    return std::nullopt;
  }
  const LicensePretraining demo;
  const std::pair<const char*, bool> demo_options[] = {{"--pretrained-dir", !d.pretrained_dir.empty()},
                                                       {"--pretrain-epochs", d.pretraining.epochs != demo.epochs},
                                                       {"--pretrain-lr", d.pretraining.lr != demo.lr}};
  for (const auto& [name, given] : demo_options)
    check<ValueError>(!given, name, " applies only to the built-in demo, not with --checkpoint");
  check<ValueError>(!d.task.empty(), "--checkpoint needs --task (a GLUE / SuperGLUE task name)");
  const GlueTask task = parse_glue_task(d.task);  // ValueError naming an unknown task
  check<IoError>(std::filesystem::is_directory(d.checkpoint), "checkpoint directory '", d.checkpoint.string(),
                 "' does not exist");
  for (const char* file : {"config.json", "model.safetensors", "spm.model"})
    check<IoError>(std::filesystem::is_regular_file(d.checkpoint / file), "checkpoint directory '",
                   d.checkpoint.string(), "' has no ", file, " ('", (d.checkpoint / file).string(), "')");
  check<ValueError>(!d.data.empty(), "--task ", d.task, " needs --data DIR (the task's GLUE files)");
  check<IoError>(std::filesystem::is_directory(d.data), "data directory '", d.data.string(), "' does not exist");
  return task;
}

/// The task of a user-given checkpoint directory and GLUE data.
template <Backend B>
std::unique_ptr<DebertaTask<B>> checkpoint_task(const RunOptions& o, const DebertaOptions& d, GlueTask glue) {
  const TaskInfo& info = task_info(glue);
  TextTask task;
  task.name = info.name;
  task.pair = info.pair;
  task.labels = info.labels;
  task.metric = info.metrics.front();
  task.train = limited(read_glue(glue, glue_split_file(glue, d.data, "train")), d.max_train);
  task.test = limited(read_glue(glue, glue_split_file(glue, d.data, "dev")), d.max_test);
  task.data = {{"type", "glue"}, {"path", d.data.string()}};
  DebertaV2Config config = io::load_deberta_v2_config(d.checkpoint / "config.json");
  return std::make_unique<DebertaTask<B>>(d.checkpoint, std::move(config), std::move(task), o.batch, d.max_length,
                                          o.seed);
}

/// Runs the runner with parsed options; throws plora::Error on bad input.
template <Backend B>
nlohmann::ordered_json run_deberta(const RunOptions& o, const DebertaOptions& d, Clock::time_point start,
                                   std::ostream& log) {
  validate(o);
  const std::optional<GlueTask> glue = validate(d);
  prepare_output(o.output);
  set_backend_threads<B>(o.threads);
  nlohmann::ordered_json report;
  std::unique_ptr<DebertaTask<B>> task;
  if (glue) {
    task = checkpoint_task<B>(o, d, *glue);
  } else {
    const std::filesystem::path dir = d.pretrained_dir.empty() ? o.output / "pretrained" : d.pretrained_dir;
    LicensePretraining pretraining = d.pretraining;
    pretraining.max_examples = d.max_train;
    LicensesDemo demo = prepare_licenses_demo<B>(dir, pretraining, o.quiet, log);
    demo.task.train = limited(std::move(demo.task.train), d.max_train);
    demo.task.test = limited(std::move(demo.task.test), d.max_test);
    const DebertaV2Config config = io::load_deberta_v2_config(demo.checkpoint / "config.json");
    report["pretraining"] = std::move(demo.pretraining);
    task = std::make_unique<DebertaTask<B>>(demo.checkpoint, config, std::move(demo.task), o.batch, d.max_length,
                                            o.seed);
  }
  if (!o.quiet && task->metric() == metrics::Metric::Accuracy)
    log << "majority-class accuracy of the test set: " << format_number(task->majority_baseline()) << '\n';
  return run_pipeline<B>(o, *task, std::move(report), start, log);
}

/// The whole program: parse, run, map errors to exit codes (CLI11's for bad
/// command lines, 1 for every other failure, with the message on stderr).
template <Backend B>
int deberta_runner_main(int argc, char** argv) {
  const auto start = Clock::now();
  CLI::App app{
      "deberta_runner: fine-tune a Hugging Face DeBERTa-v2/v3 on a GLUE / SuperGLUE task with LoRA, AdaLoRA, "
      "Partial-LoRA (sparse low-rank adapters whose per-layer ratios are extracted from the pretrained weights), "
      "full fine-tuning or Random Masking. With no arguments it runs a built-in demo on the license texts every "
      "Debian machine has (/usr/share/common-licenses): pretrain a small DeBERTa to tell which of 5 licenses a "
      "sentence comes from, then fine-tune it with Partial-LoRA on 5 other licenses."};
  app.footer(
      "Outputs in --output: report.json, adapter_model.safetensors + adapter_config.json (PEFT names), "
      "ratios.json (when extracted), ratios.svg, params.svg; the demo's checkpoint in <output>/pretrained.\n"
      "Exit codes: 0 success, 1 invalid input or failure (message on stderr), other non-zero codes for "
      "malformed command lines.");
  RunOptions options = deberta_run_defaults();
  DebertaOptions deberta;
  add_run_options(app, options);
  add_deberta_options(app, deberta);
  return run_main(app, "deberta_runner", argc, argv, [&] { run_deberta<B>(options, deberta, start, std::cout); });
}

}  // namespace plora::runner
