#pragma once
// The command-line options every runner shares (adapter, ratios, training,
// output), bound to a CLI11 app, and their validation. Model- and data-specific
// options (checkpoint, dataset) are added by each runner.
#include <CLI/CLI.hpp>
#include <iostream>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "plora/core/error.hpp"
#include "plora/core/view.hpp"
#include "plora/sparsity/threshold_search.hpp"

namespace plora::runner {

/// `text` read whole as a T, or nothing (the validators below check option
/// text before CLI11 converts it).
template <class T>
std::optional<T> parse_whole(const std::string& text) {
  T value{};
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (text.empty() || error != std::errc{} || stop != end) return std::nullopt;
  return value;
}

/// A CLI11 check that an option's text is a finite number meeting `ok`, with
/// a plain message (CLI11's own number checks let NaN through and print
/// their bounds as 300-digit numbers).
inline CLI::Validator finite_number(bool (*ok)(double), const std::string& requirement) {
  return {[ok, requirement](std::string& text) -> std::string {
            const std::optional<double> value = parse_whole<double>(text);
            return value && std::isfinite(*value) && ok(*value) ? "" : "'" + text + "' is not " + requirement;
          },
          requirement};
}
inline const CLI::Validator kPositive = finite_number([](double v) { return v > 0.0; }, "a finite number > 0");
inline const CLI::Validator kNonNegative = finite_number([](double v) { return v >= 0.0; }, "a finite number >= 0");

/// A seed: a whole number in [0, 2^64) written in decimal (CLI11 reads "-1"
/// and overflowing values as 2^64 - 1).
inline const CLI::Validator kSeed{[](std::string& text) -> std::string {
                                    return parse_whole<std::uint64_t>(text)
                                               ? ""
                                               : "'" + text + "' is not a whole number in [0, 2^64)";
                                  },
                                  "0 <= n < 2^64"};

/// Threads beyond the machine's hardware threads only contend (and past
/// some thousands OpenMP fails to start them): 0 = all, at most all.
inline CLI::Validator thread_count() {
  const unsigned available = std::max(1u, std::thread::hardware_concurrency());
  return {[available](std::string& text) -> std::string {
            const std::optional<long> value = parse_whole<long>(text);
            return value && *value >= 0 && *value <= long(available)
                       ? ""
                       : "'" + text + "' is not in [0, " + std::to_string(available) + "], the hardware threads here";
          },
          "0.." + std::to_string(available)};
}

/// Everything the shared pipeline (pipeline.hpp) reads; defaults are the
/// runners' defaults.
struct RunOptions {
  // adapter
  std::string adapter = "partial-lora";
  Index rank = 8;
  float alpha = 16.0f;
  std::vector<std::string> targets{"query", "value"};
  Index target_rank = 0;  ///< AdaLoRA's final average rank; 0 = 2/3 of --rank
  // ratios and masks
  std::optional<double> ratio;
  std::filesystem::path ratios_file;
  std::string extractor = "svd";
  double tau = 0.9;
  double resolution = 1.0 / 64.0;
  Index shots = 10;
  Index probe_epochs = 20;
  std::string mask = "partial";
  std::optional<double> density;
  // training
  Index epochs = 10;
  double lr = 1e-2;
  Index batch = 32;
  double warmup = 0.1;
  double weight_decay = 0.01;
  std::uint64_t seed = 0;
  int threads = 1;
  // training state (kTrainingStateFile in the output directory)
  Index save_every = 0;             ///< save it every this many steps and after every evaluation; 0: never
  std::optional<Index> stop_after;  ///< end the run, state saved, after this many steps in total
  bool resume = false;              ///< continue from it
  // output
  std::filesystem::path output = "out/run";
  bool quiet = false;
};

/// The file in --output that holds a run's training state (a plora checkpoint).
inline constexpr const char* kTrainingStateFile = "training_state.safetensors";

inline const std::vector<std::string> kAdapterNames = {"lora", "adalora", "partial-lora", "partial-adalora", "full",
                                                        "random-masking"};

/// Whether the adapter named `name` is built from sparsity ratios.
inline bool is_partial(std::string_view name) { return name == "partial-lora" || name == "partial-adalora"; }

/// Whether the run needs sparsity ratios: Partial-* always, Random Masking to
/// match the Partial-LoRA parameter count when no --density is given.
inline bool needs_ratios(const RunOptions& o) {
  return is_partial(o.adapter) || (o.adapter == "random-masking" && !o.density);
}

/// Whether the run extracts its ratios (rather than reading --ratios or using --ratio).
inline bool extracts_ratios(const RunOptions& o) { return needs_ratios(o) && !o.ratio && o.ratios_file.empty(); }

/// The items of comma-separated lists, empty ones kept ("a,,b" -> a, "", b).
inline std::vector<std::string> split_commas(const std::vector<std::string>& lists) {
  std::vector<std::string> items;
  for (const std::string& list : lists)
    for (std::size_t begin = 0;;) {
      const std::size_t comma = list.find(',', begin);
      items.push_back(list.substr(begin, comma - begin));
      if (comma == std::string::npos) break;
      begin = comma + 1;
    }
  return items;
}

/// Adds the shared options to `app`, writing into `options`.
inline void add_run_options(CLI::App& app, RunOptions& options) {
  app.option_defaults()->always_capture_default();
  const std::string adapter_group = "Adapter";
  app.add_option("--adapter", options.adapter,
                 "Fine-tuning method: lora (PEFT LoRA), adalora (PEFT AdaLoRA with its rank allocator), "
                 "partial-lora / partial-adalora (the method: LoRA / AdaLoRA restricted to rows and columns "
                 "masked by per-layer sparsity ratios), full (every entry of the target weights), "
                 "random-masking (a random subset of the entries of the target weights)")
      ->check(CLI::IsMember(kAdapterNames))
      ->group(adapter_group);
  app.add_option("--rank", options.rank, "LoRA rank r (AdaLoRA: the initial rank init_r)")
      ->check(kPositive)
      ->group(adapter_group);
  app.add_option("--alpha", options.alpha,
                 "LoRA scaling numerator: LoRA scales by alpha / r, AdaLoRA by alpha / (r + 1e-5)")
      ->check(kPositive)
      ->group(adapter_group);
  // Split here, not by CLI11's delimiter, which drops empty items: "query,,value" must reach validate().
  app.add_option_function<std::vector<std::string>>(
         "--targets", [&options](const std::vector<std::string>& lists) { options.targets = split_commas(lists); },
         "Comma-separated target modules, matched like PEFT's target_modules (a site's full name "
         "equals the entry or ends with '.' + entry), e.g. query,key,value,output.dense")
      ->type_name("LIST")
      ->default_str(CLI::detail::join(options.targets, ","))
      ->group(adapter_group);
  app.add_option("--target-rank", options.target_rank,
                 "AdaLoRA only: final average rank per matrix (target_r); 0 = two thirds of --rank")
      ->check(kNonNegative)
      ->group(adapter_group);

  const std::string ratio_group = "Sparsity ratios (partial-lora, partial-adalora, random-masking)";
  auto* ratio = app.add_option_function<double>(
                       "--ratio", [&options](const double& value) { options.ratio = value; },
                       "One sparsity ratio (kept density of each ΔW, in (0, 1]) for every target site, instead "
                       "of extracting per-layer ratios")
                    ->type_name("FLOAT")
                    ->group(ratio_group);
  app.add_option("--ratios", options.ratios_file,
                 "ratios.json with per-site ratios and scores from an earlier run (its output dir), instead of "
                 "extracting them")
      ->type_name("FILE")
      ->excludes(ratio)
      ->group(ratio_group);
  app.add_option("--ratio-extractor", options.extractor,
                 "How ratios are extracted when neither --ratio nor --ratios is given: svd (truncated SVD, "
                 "forward passes only; the paper's default), snip (|W * dL/dW|), imp (iterative magnitude "
                 "pruning)")
      ->check(CLI::IsMember({"svd", "snip", "imp"}))
      ->group(ratio_group);
  app.add_option("--tau", options.tau,
                 "Extraction threshold: each site's ratio is the smallest density keeping the few-shot metric "
                 ">= tau * the unpruned metric, tau in (0, 1]")
      ->group(ratio_group);
  app.add_option("--resolution", options.resolution, "Grid step of the extraction's keep-fraction search, in (0, 1)")
      ->group(ratio_group);
  app.add_option("--shots", options.shots, "Few-shot examples per class for the linear probe and the extraction")
      ->check(kPositive)
      ->group(ratio_group);
  app.add_option("--probe-epochs", options.probe_epochs,
                 "Epochs of the linear-probe warm-up of the new head before extraction")
      ->check(kPositive)
      ->group(ratio_group);
  app.add_option("--mask", options.mask,
                 "Mask policy on top of the ratios: partial (random rows/columns, the method), targeted (the "
                 "top-scored rows/columns), stochastic (rows/columns sampled in proportion to their scores), "
                 "uniform (random, with the mean ratio at every site)")
      ->check(CLI::IsMember({"partial", "targeted", "stochastic", "uniform"}))
      ->group(ratio_group);
  app.add_option_function<double>(
         "--density", [&options](const double& value) { options.density = value; },
         "random-masking only: fraction of trained entries of each target weight, in (0, 1]; default: the "
         "density that matches the partial-lora parameter count of the (given or extracted) ratios")
      ->type_name("FLOAT")
      ->group(ratio_group);

  const std::string train_group = "Training";
  app.add_option("--epochs", options.epochs, "Training epochs")->check(kPositive)->group(train_group);
  app.add_option("--lr", options.lr, "Peak learning rate of AdamW")->check(kPositive)->group(train_group);
  app.add_option("--batch", options.batch, "Batch size")->check(kPositive)->group(train_group);
  app.add_option("--warmup", options.warmup,
                 "Fraction of the training steps spent warming the learning rate up linearly from 0 (then it "
                 "decays linearly to 0), in [0, 1)")
      ->group(train_group);
  app.add_option("--weight-decay", options.weight_decay, "AdamW decoupled weight decay (not applied to biases)")
      ->check(kNonNegative)
      ->group(train_group);
  app.add_option("--seed", options.seed, "Seed of initialisation, masks, few-shot subset and batch order")
      ->check(kSeed)
      ->group(train_group);
  app.add_option("--threads", options.threads,
                 "CPU threads for the GEMMs and for the extraction's parallel loop over weights; 0 = all cores")
      ->check(thread_count())
      ->group(train_group);

  const std::string state_group = "Training state (<output>/training_state.safetensors)";
  app.add_option("--save-every", options.save_every,
                 "Save the training state (adapters, optimizer, position, schedules) every this many steps and "
                 "after every epoch's evaluation; 0: never")
      ->check(kNonNegative)
      ->group(state_group);
  app.add_option_function<Index>(
         "--stop-after", [&options](const Index& steps) { options.stop_after = steps; },
         "End the run after this many steps in total, saving the training state; continue it later with --resume "
         "(the schedule still spans all --epochs)")
      ->check(kPositive)
      ->type_name("STEPS")
      ->group(state_group);
  app.add_flag("--resume", options.resume,
               "Continue the run whose training state is in --output; give the options of that run (parameters, "
               "seed and schedules are checked against it)")
      ->group(state_group);

  const std::string output_group = "Output";
  app.add_option("--output", options.output,
                 "Output directory: report.json, adapter_model.safetensors + adapter_config.json, ratios.json, "
                 "SVG pictures")
      ->type_name("DIR")
      ->group(output_group);
  app.add_flag("--quiet", options.quiet, "No progress bar, only the final summary")->group(output_group);
}

/// Cross-field checks CLI11 cannot express; ValueError naming the option.
inline void validate(const RunOptions& o) {
  check<ValueError>(!o.targets.empty(), "--targets: the list is empty");
  check<ValueError>(!o.ratio || (*o.ratio > 0.0 && *o.ratio <= 1.0), "--ratio ", o.ratio.value_or(0.0),
                    " is outside (0, 1]");
  check<ValueError>(!o.density || (*o.density > 0.0 && *o.density <= 1.0), "--density ", o.density.value_or(0.0),
                    " is outside (0, 1]");
  check<ValueError>(!o.density || o.adapter == "random-masking",
                    "--density applies only to --adapter random-masking, not ", o.adapter);
  // Options a run would ignore are refused, so that none is taken for having had an effect.
  const RunOptions defaults;
  const char* with_ratios = "to --adapter partial-lora, partial-adalora or random-masking without --density";
  const char* extracting = "when ratios are extracted (--adapter partial-lora, partial-adalora or random-masking "
                           "without --density, and neither --ratio nor --ratios)";
  const bool extracts = extracts_ratios(o);
  const struct {
    const char* name;
    bool given, applies;
    const char* where;
  } conditional[] = {{"--ratio", o.ratio.has_value(), needs_ratios(o), with_ratios},
                     {"--ratios", !o.ratios_file.empty(), needs_ratios(o), with_ratios},
                     {"--mask", o.mask != defaults.mask, needs_ratios(o), with_ratios},
                     {"--ratio-extractor", o.extractor != defaults.extractor, extracts, extracting},
                     {"--tau", o.tau != defaults.tau, extracts, extracting},
                     {"--resolution", o.resolution != defaults.resolution, extracts, extracting},
                     {"--shots", o.shots != defaults.shots, extracts, extracting},
                     {"--probe-epochs", o.probe_epochs != defaults.probe_epochs, extracts, extracting}};
  for (const auto& option : conditional)
    check<ValueError>(!option.given || option.applies, option.name, " applies only ", option.where,
                      "; this run: --adapter ", o.adapter, o.density ? " --density" : "");
  for (const std::string& target : o.targets)
    check<ValueError>(!target.empty() && target.front() != '-', "--targets: '", target,
                      "' is not a module name (a list like query,value)");
  check<ValueError>(o.target_rank == 0 || o.adapter == "adalora" || o.adapter == "partial-adalora",
                    "--target-rank applies only to --adapter adalora or partial-adalora, not ", o.adapter);
  check<ValueError>(o.tau > 0.0 && o.tau <= 1.0, "--tau ", o.tau, " is outside (0, 1]");
  check<ValueError>(o.resolution >= kFinestResolution && o.resolution < 1.0, "--resolution ", o.resolution,
                    " is outside [", kFinestResolution, ", 1)");
  check<ValueError>(o.warmup >= 0.0 && o.warmup < 1.0, "--warmup ", o.warmup, " is outside [0, 1)");
  check<ValueError>(o.target_rank <= o.rank, "--target-rank ", o.target_rank, " exceeds --rank ", o.rank);
  check<ValueError>(o.ratios_file.empty() || std::filesystem::is_regular_file(o.ratios_file), "--ratios: '",
                    o.ratios_file.string(), "' is not a file");
  const std::filesystem::path state = o.output / kTrainingStateFile;
  check<ValueError>(!o.resume || std::filesystem::is_regular_file(state), "--resume: no training state '",
                    state.string(), std::filesystem::exists(state) ? "' (it is not a file)" : "'",
                    " (save one with --save-every or --stop-after)");
}

/// Creates the output directory and checks that files can be written there
/// now, rather than when a long run ends.
inline void prepare_output(const std::filesystem::path& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  check<IoError>(!error && std::filesystem::is_directory(dir), "--output '", dir.string(),
                 "' cannot be made a directory", error ? ": " + error.message() : std::string());
  const std::filesystem::path probe = dir / ".plora-write-probe";
  const bool writable = static_cast<bool>(std::ofstream(probe) << "probe");
  std::filesystem::remove(probe, error);
  check<IoError>(writable, "--output '", dir.string(), "': cannot write files there");
}

/// A runner's whole program around `run()`: parse the command line (CLI11's
/// own exit codes for malformed ones), run, and turn any error into a message
/// on stderr naming `program` and exit code 1.
template <class Run>
int run_main(CLI::App& app, const char* program, int argc, char** argv, Run&& run) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  }
  try {
    run();
    return 0;
  } catch (const plora::Error& error) {
    std::cerr << program << ": error: " << error.what() << '\n';
  } catch (const std::exception& error) {
    std::cerr << program << ": failed: " << error.what() << '\n';
  }
  return 1;
}

}  // namespace plora::runner
