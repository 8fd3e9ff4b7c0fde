#pragma once
// The runners' shared pipeline, generic over the model and the backend:
//
//   1. sparsity ratios, when the method needs them: --ratios FILE, one --ratio
//      for every site, or extracted (METHOD.md §2): linear probe of the new
//      head on a few-shot subset, then SVD / SNIP / IMP, saved as ratios.json
//   2. the mask plan on top of the ratios (--mask)
//   3. a fresh model with the adapter attached to every --targets site
//   4. AdamW + linear warm-up / decay, progress bar, evaluation per epoch
//      (AdaLoRA: orthogonality regulariser and rank allocator)
//   5. outputs: report.json, adapter_model.safetensors + adapter_config.json,
//      ratios.svg (per-site ratios), params.svg (trainable parameters per method)
//
// A Task supplies the model and the data for backend B (see vit_runner/vit_task.hpp):
//   template <Adapter A> using Model = ...;         a plora::Model
//   template <Adapter A> Model<A> load_model();     fresh from the checkpoint, head per the task
//   using Source = ...;                             a BatchSource of the model's batches
//   const Source& train();  const Source& test();
//   const Source& few_shot(Index per_class, std::uint64_t seed);
//   metrics::Metric metric() const;
//   std::vector<std::string> head_prefixes() const; parameters trained in full (modules_to_save)
//   Index base_parameters() const;                  scalars of the last loaded model's own weights
//   std::string checkpoint() const;                 for base_model_name_or_path
//   nlohmann::ordered_json describe() const;        model and data, for the report
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <ostream>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/adapter_kinds.hpp"
#include "common/options.hpp"
#include "common/report.hpp"
#include "common/svg.hpp"
#include "plora/adapters/adapters.hpp"
#include "plora/core/digest.hpp"
#include "plora/core/rng.hpp"
#include "plora/io/ratios_json.hpp"
#include "plora/io/safetensors.hpp"
#include "plora/masks/masks.hpp"
#include "plora/models/sites.hpp"
#include "plora/sparsity/sparsity.hpp"
#include "plora/train/adamw.hpp"
#include "plora/train/callbacks.hpp"
#include "plora/train/checkpoint.hpp"
#include "plora/train/schedule.hpp"
#include "plora/train/trainer.hpp"

namespace plora::runner {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Sets the backend's thread count where it has one (the CPU backend's GEMMs).
template <Backend B>
void set_backend_threads(int threads) {
  if constexpr (requires { B::set_threads(threads); })
    B::set_threads(threads == 0 ? static_cast<int>(std::max(1u, std::thread::hardware_concurrency())) : threads);
}

/// Where the run's ratios came from and what obtaining them cost.
struct RatioSource {
  RatioReport report;         ///< restricted to the target sites, in model order
  std::string origin;         ///< "extracted", the --ratios file, or "--ratio"
  double probe_seconds = 0.0;
  double extraction_seconds = 0.0;
};

namespace detail {
/// Linear probe + extraction (METHOD.md §2) on a model of the task.
template <Backend B, class Task, class Model>
RatioSource extract(const RunOptions& o, Task& task, Model& model, std::ostream& log) {
  RatioSource result;
  result.origin = "extracted";
  const auto& shots = task.few_shot(o.shots, o.seed);
  const auto probe_start = Clock::now();
  const LinearProbeConfig probe{.epochs = o.probe_epochs,
                                .optimizer = {.lr = 1e-2, .weight_decay = 0.0},
                                .head_prefixes = task.head_prefixes()};
  const std::vector<float> losses = fit_linear_probe(model, shots, probe);
  result.probe_seconds = seconds_since(probe_start);
  const ExtractionConfig config{.tau = o.tau,
                                .resolution = o.resolution,
                                .metric = task.metric(),
                                .threads = o.threads,
                                .seed = o.seed,
                                .targets = o.targets};
  if (!o.quiet)
    log << "linear probe: " << o.probe_epochs << " epochs on " << o.shots << " shots per class, loss "
        << format_number(losses.front()) << " -> " << format_number(losses.back()) << "\nextracting ratios ("
        << o.extractor << ", tau " << o.tau << ") ..." << std::flush;
  // The runner's levers on a failed extraction, e.g. a probed head that scores M0 <= 0.
  const std::string levers = "extracting ratios after " + std::to_string(o.probe_epochs) + " --probe-epochs on " +
                             std::to_string(o.shots) + " --shots per class (raise them, or give --ratio / --ratios)";
  result.report = in_context<ValueError>(levers, [&] {
    if (o.extractor == "snip") return extract_ratios(Snip{}, model, shots, config);
    if (o.extractor == "imp") return extract_ratios(Imp{}, model, shots, config);
    return extract_ratios(Svd{}, model, shots, config);
  });
  result.extraction_seconds = result.report.seconds;
  io::save_ratios(o.output / "ratios.json", result.report);
  if (!o.quiet)
    log << " done in " << format_number(result.extraction_seconds, 3) << " s (few-shot "
        << metrics::metric_name(task.metric()) << " M0 = " << format_number(result.report.reference_metric) << ")\n";
  return result;
}
}  // namespace detail

/// The run's ratios (see RatioSource), or nullopt when the method needs none.
template <Backend B, class Task>
std::optional<RatioSource> obtain_ratios(const RunOptions& o, Task& task, std::ostream& log) {
  if (!needs_ratios(o)) return std::nullopt;
  auto model = task.template load_model<Lora<B>>();
  const std::vector<std::string> targets = matched_sites(model, o.targets);
  RatioSource source;
  if (!o.ratios_file.empty()) {
    source.report = io::load_ratios(o.ratios_file, site_shapes(model));
    source.origin = o.ratios_file.string();
  } else if (o.resume && !o.ratio) {
    // The interrupted run extracted them and saved them; its masks must be the ones resumed.
    const std::filesystem::path saved = o.output / "ratios.json";
    source.report = in_context<Error>("--resume: the ratios the interrupted run extracted (was it a run of "
                                      "--adapter " + o.adapter + "?)",
                                      [&] { return io::load_ratios(saved, site_shapes(model)); });
    source.origin = saved.string();
  } else if (o.ratio) {
    source.origin = "--ratio";
    source.report.extractor = "uniform";
    source.report.seed = o.seed;
    for (const auto& name : targets) {
      SiteRatio site;
      site.name = name;
      site.out_features = model.site(name).out_features();
      site.in_features = model.site(name).in_features();
      site.ratio = *o.ratio;
      site.outcome = SearchOutcome::Found;
      source.report.sites.push_back(std::move(site));
    }
  } else {
    source = detail::extract<B>(o, task, model, log);
  }
  std::vector<SiteRatio> kept;
  for (const auto& name : targets)
    kept.push_back(in_context<ValueError>("ratios from " + source.origin, [&] { return source.report.site(name); }));
  source.report.sites = std::move(kept);
  return source;
}

/// The masks of --mask on top of the ratios (METHOD.md §3).
inline MaskPlan plan_for(const RunOptions& o, const RatioReport& report) {
  const bool scored = std::all_of(report.sites.begin(), report.sites.end(),
                                  [](const SiteRatio& s) { return !s.row_scores.empty() && !s.col_scores.empty(); });
  check<ValueError>(scored || o.mask == "partial" || o.mask == "uniform", "--mask ", o.mask,
                    " chooses rows and columns by their scores, which --ratio does not give; extract the ratios "
                    "or pass --ratios");
  if (o.mask == "targeted") return plan_masks(report, TargetedMask{}, o.seed);
  if (o.mask == "stochastic") return plan_masks(report, StochasticTargetedMask{}, o.seed);
  if (o.mask == "uniform") return plan_masks(report, PartialMask{}, o.seed, uniform_ratios(report.ratios()));
  return plan_masks(report, PartialMask{}, o.seed);
}

/// A Digest of every site's kept rows and columns: equal plans, equal digests.
inline std::string mask_plan_digest(const MaskPlan& plan) {
  Digest digest;
  for (const auto& [name, planned] : plan)
    digest.add(name).add(std::as_bytes(std::span(planned.mask.rows))).add(std::as_bytes(std::span(planned.mask.cols)));
  return digest.hex();
}

/// What a resumed run must share with the interrupted one (TrainerConfig::
/// settings, checked on --resume): the options that shape the training, by
/// their names, besides --seed (the trainer's own check) and those that only
/// say how to run it (--threads, --save-every, --stop-after, --output,
/// --quiet); the masks, whatever gave their ratios; the model and the data
/// (not where their files lie, but what they hold: the task's digests).
inline std::map<std::string, std::string> run_settings(const RunOptions& o, const MaskPlan* plan,
                                                       nlohmann::ordered_json task) {
  const auto text = [](const auto& value) { return nlohmann::json(value).dump(); };
  std::map<std::string, std::string> settings{
      {"--adapter", o.adapter},         {"--rank", text(o.rank)},       {"--alpha", text(o.alpha)},
      {"--targets", text(o.targets)},   {"--target-rank", text(o.target_rank)},
      {"--mask", o.mask},               {"--density", o.density ? text(*o.density) : "none"},
      {"--epochs", text(o.epochs)},     {"--lr", text(o.lr)},           {"--batch", text(o.batch)},
      {"--warmup", text(o.warmup)},     {"--weight-decay", text(o.weight_decay)}};
  if (plan) settings["mask digest"] = mask_plan_digest(*plan);
  // A resumed run reuses the saved ratios; these keep its report true to how they were extracted.
  if (extracts_ratios(o))
    settings.merge(std::map<std::string, std::string>{{"--ratio-extractor", o.extractor},
                                                      {"--tau", text(o.tau)},
                                                      {"--resolution", text(o.resolution)},
                                                      {"--shots", text(o.shots)},
                                                      {"--probe-epochs", text(o.probe_epochs)}});
  task.erase("checkpoint");  // where the files lie, not what they hold
  if (task.contains("dataset")) task["dataset"].erase("path");
  // What they hold: the digests on their own, so that a resume on other weights or data says which.
  const auto take_digest = [&](const char* part, const char* key, const char* setting) {
    settings[setting] = task.at(part).at(key).get<std::string>();
    task[part].erase(key);
  };
  take_digest("model", "weights_digest", "base weights");
  take_digest("dataset", "digest", "data");
  settings["task"] = task.dump();
  return settings;
}

/// Trainable scalars of Partial-LoRA at `rank` under `plan`: r (|R| + |C|) per site.
inline Index partial_lora_parameters(const MaskPlan& plan, Index rank) {
  Index total = 0;
  for (const auto& [name, planned] : plan)
    total += rank * static_cast<Index>(planned.mask.rows.size() + planned.mask.cols.size());
  return total;
}

/// Progress on the console: the trainer's ProgressBar, and each evaluation's
/// metric appended to the bar's line (which it then ends).
class ConsoleProgress {
 public:
  ConsoleProgress(std::ostream& out, bool quiet) : out_(&out), bar_(out), quiet_(quiet) {}
  void on_train_begin(TrainContext& ctx) {
    if (!quiet_) bar_.on_train_begin(ctx);
  }
  void on_step_end(TrainContext& ctx, float loss, Index step) {
    if (!quiet_) bar_.on_step_end(ctx, loss, step);
  }
  void on_evaluate(TrainContext&, const Metrics& metrics) {
    if (quiet_) return;
    for (const auto& [name, value] : metrics) *out_ << "  " << name << ' ' << format_number(value, 4, true);
    *out_ << '\n' << std::flush;
  }

 private:
  std::ostream* out_;
  ProgressBar bar_;
  bool quiet_;
};

/// AdaLoRA's training hooks (REFERENCE.md §4): the orthogonality regulariser
/// before each optimizer step and the rank allocator after it. A no-op
/// without AdaLoRA adapters.
template <Backend B>
class AdaLoraHooks {
 public:
  AdaLoraHooks(std::vector<AdaLora<B>*> adapters, const AdaLoraConfig& config)
      : adapters_(std::move(adapters)), orth_reg_weight_(config.orth_reg_weight) {
    if (!adapters_.empty()) allocator_.emplace(adapters_, config);
  }
  void on_gradients(TrainContext& ctx) {
    if (allocator_) ctx.loss += static_cast<float>(adalora_orthogonal_regularization(adapters_, orth_reg_weight_));
  }
  /// PEFT calls update_and_allocate(global_step) with the 0-based index of the step just taken.
  void on_step_end(TrainContext&, float, Index step) {
    if (allocator_) allocator_->update_and_mask(step - 1);
  }
  [[nodiscard]] const RankAllocator<B>* allocator() const { return allocator_ ? &*allocator_ : nullptr; }
  [[nodiscard]] RankAllocator<B>* allocator() { return allocator_ ? &*allocator_ : nullptr; }

 private:
  std::vector<AdaLora<B>*> adapters_;
  float orth_reg_weight_;
  std::optional<RankAllocator<B>> allocator_;
};

/// report.json's history: per evaluation the epoch, the mean training loss of
/// that epoch and the metric. A CheckpointState, so that a resumed run reports
/// the epochs before its interruption too; kept (and reported) at float
/// precision, the precision the losses are computed in, so that it survives a
/// checkpoint exactly.
class RunHistory {
 public:
  struct Entry {
    Index epoch = 0;  ///< from 1
    float train_loss = 0.0f;
    float metric = 0.0f;
  };

  /// @param metric  the evaluations' metric (each of plora's lies in [-1, 1])
  /// @param epochs, batches_per_epoch  the run's: bounds on what a saved history can hold
  RunHistory(std::string metric, Index epochs, Index batches_per_epoch)
      : metric_(std::move(metric)), epochs_(epochs), batches_per_epoch_(batches_per_epoch) {}

  void on_step_end(TrainContext&, float loss, Index) {
    // Kahan summation: a float sum over thousands of steps would lose digits the report shows.
    const float term = loss - epoch_loss_error_, sum = epoch_loss_ + term;
    epoch_loss_error_ = (sum - epoch_loss_) - term;
    epoch_loss_ = sum;
    epoch_steps_ += 1.0f;
  }
  void on_evaluate(TrainContext& ctx, const Metrics& metrics) {
    entries_.push_back({ctx.epoch + 1, epoch_steps_ > 0.0f ? epoch_loss_ / epoch_steps_ : 0.0f,
                        static_cast<float>(metrics.at(metric_))});
    epoch_loss_ = epoch_loss_error_ = epoch_steps_ = 0.0f;
  }
  [[nodiscard]] const std::vector<Entry>& entries() const { return entries_; }

  // CheckpointState: one row [loss sum, its rounding error, steps of the current epoch,
  // (epoch, loss, metric) per entry].
  [[nodiscard]] StateTensors export_state() const {
    std::vector<float> row{epoch_loss_, epoch_loss_error_, epoch_steps_};
    for (const Entry& e : entries_) row.insert(row.end(), {static_cast<float>(e.epoch), e.train_loss, e.metric});
    const auto cols = static_cast<Index>(row.size());
    return {{"history", HostMatrix(1, cols, std::move(row))}};
  }
  void check_state(const StateTensors& state) const {
    const auto it = state.find("history");
    check<ValueError>(state.size() == 1 && it != state.end() && it->second.rows() == 1 &&
                          it->second.cols() >= kHeader && (it->second.cols() - kHeader) % 3 == 0,
                      "training state: the run history must be one row of ", kHeader, " + 3 n values");
    // What on_step_end and on_evaluate can have written: losses >= 0, at most one
    // epoch's steps, and one entry per ended epoch (1, 2, ...) with its metric.
    const auto& row = it->second.values();
    const auto entries = static_cast<Index>(row.size() - kHeader) / 3;
    check<ValueError>(std::all_of(row.begin(), row.end(), [](float v) { return std::isfinite(v); }),
                      "training state: the run history holds a NaN or Inf");
    check<ValueError>(row[0] >= 0.0f && row[2] >= 0.0f && row[2] == std::floor(row[2]) &&
                          row[2] <= static_cast<float>(batches_per_epoch_),
                      "training state: the run history's current epoch sums a loss of ", row[0], " over ", row[2],
                      " steps (expected a loss >= 0 over a whole number of steps <= ", batches_per_epoch_, ")");
    check<ValueError>(entries <= epochs_, "training state: the run history has ", entries,
                      " evaluations, more than this run's ", epochs_, " epochs");
    for (Index e = 0; e < entries; ++e) {
      const float* entry = &row[static_cast<std::size_t>(kHeader + 3 * e)];
      check<ValueError>(entry[0] == static_cast<float>(e + 1) && entry[1] >= 0.0f && std::abs(entry[2]) <= 1.0f,
                        "training state: run history entry ", e, " is (epoch ", entry[0], ", loss ", entry[1], ", ",
                        metric_, " ", entry[2], "); expected epoch ", e + 1, ", a loss >= 0 and a metric in [-1, 1]");
    }
  }
  void import_state(const StateTensors& state) {
    check_state(state);
    const auto& row = state.at("history").values();
    epoch_loss_ = row[0];
    epoch_loss_error_ = row[1];
    epoch_steps_ = row[2];
    entries_.clear();
    for (std::size_t i = kHeader; i < row.size(); i += 3)
      entries_.push_back({static_cast<Index>(row[i]), row[i + 1], row[i + 2]});
  }

 private:
  static constexpr Index kHeader = 3;  // loss sum, its error, steps
  std::string metric_;
  Index epochs_, batches_per_epoch_;
  float epoch_loss_ = 0.0f, epoch_loss_error_ = 0.0f, epoch_steps_ = 0.0f;  // float: exact in the checkpoint
  std::vector<Entry> entries_;
};

/// The AdaLoRA factors inside the attached adapters (Partial-AdaLoRA: the compact ones).
template <Backend B, class A, class Model>
std::vector<AdaLora<B>*> adalora_factors(Model& model, const std::vector<std::string>& sites) {
  std::vector<AdaLora<B>*> out;
  for (const auto& name : sites) {
    if constexpr (std::same_as<A, AdaLora<B>>) out.push_back(&model.site(name).adapter());
    if constexpr (std::same_as<A, PartialAdaLora<B>>) out.push_back(&model.site(name).adapter().inner());
  }
  return out;
}

/// The adapter settings of the run (AdaLoRA's schedule needs the total number of steps).
inline AdapterSettings adapter_settings(const RunOptions& o, Index total_steps, const MaskPlan* plan,
                                        double density) {
  AdapterSettings s;
  s.lora = LoraConfig{.rank = o.rank, .alpha = o.alpha};
  s.adalora.init_r = o.rank;
  s.adalora.target_r = o.target_rank > 0 ? o.target_rank : std::max<Index>(1, 2 * o.rank / 3);
  s.adalora.alpha = o.alpha;
  // PEFT needs tinit < total_step - tfinal: warm-up at full budget for 10% of the
  // steps, fix the final pattern for the last 20%.
  s.adalora.tinit = total_steps / 10;
  s.adalora.tfinal = total_steps / 5;
  s.adalora.total_step = total_steps;
  s.random_masking.density = density;
  s.plan = plan;
  s.seed = o.seed;
  return s;
}

/// Fine-tunes a fresh model of `task` with adapter type A and writes every
/// output of the run into o.output. Returns the report.
template <Backend B, Adapter A, class Task>
nlohmann::ordered_json fine_tune(const RunOptions& o, Task& task, const std::optional<RatioSource>& ratios,
                                 nlohmann::ordered_json report, Clock::time_point start, std::ostream& log) {
  using Traits = AdapterTraits<A>;
  const auto& train = task.train();
  std::optional<MaskPlan> plan;
  if (ratios) plan = plan_for(o, ratios->report);
  const TrainerConfig trainer_config{
      .epochs = o.epochs, .seed = o.seed, .settings = run_settings(o, plan ? &*plan : nullptr, report["task"])};
  const Index total_steps = planned_steps(trainer_config, train.batches_per_epoch());

  auto model = task.template load_model<A>();
  const std::vector<std::string> sites = matched_sites(model, o.targets);
  Index dense_lora = 0, full = 0;
  for (const auto& name : sites) {
    const auto& site = model.site(name);
    dense_lora += o.rank * (site.in_features() + site.out_features());
    full += site.in_features() * site.out_features();
  }
  const double density = o.density ? *o.density
                         : plan    ? std::clamp(static_cast<double>(partial_lora_parameters(*plan, o.rank)) /
                                                    static_cast<double>(full),
                                                1e-9, 1.0)
                                   : 1.0;
  const AdapterSettings settings = adapter_settings(o, total_steps, plan ? &*plan : nullptr, density);
  attach_adapters(model, o.targets, [&](const std::string& name, Index out, Index in) {
    return Traits::make(settings, name, out, in);
  });
  const TrainableCount count = trainable_count(model);
  const std::vector<std::string> heads = task.head_prefixes();  // saved in full, like PEFT's modules_to_save
  const auto is_head = [&](const std::string& name) {
    return std::any_of(heads.begin(), heads.end(), [&](const std::string& h) { return name.starts_with(h); });
  };
  if (!o.quiet)
    log << Traits::name << " on " << sites.size() << " sites: " << count.adapters << " adapter + " << count.head
        << " head parameters trainable (dense LoRA r=" << o.rank << ": " << dense_lora << ")\n";

  // ---- training -----------------------------------------------------------
  AdamW<B> optimizer(AdamWConfig{.lr = o.lr, .weight_decay = o.weight_decay, .no_decay = {"bias"}});
  const auto warmup_steps = static_cast<Index>(o.warmup * static_cast<double>(total_steps));
  Trainer trainer(model, optimizer, trainer_config, LinearWarmupDecay(warmup_steps, total_steps));
  std::vector<typename Task::Source::Batch> test_batches;
  for (Index i = 0; i < task.test().batches_per_epoch(); ++i) test_batches.push_back(task.test().batch(0, i));
  const std::string metric = metrics::metric_name(task.metric());
  PeriodicEvaluation evaluation(
      [&] {
        return Metrics{{metric, evaluate_metric(model, std::span<const typename Task::Source::Batch>(test_batches),
                                                task.metric())}};
      },
      0, true);
  AdaLoraHooks<B> adalora(adalora_factors<B, A>(model, sites), settings.adalora);
  RunHistory history(metric, o.epochs, train.batches_per_epoch());
  // Everything a resumed run must restore besides parameters, optimizer and position.
  trainer.track_state("history", history);
  if (auto* allocator = adalora.allocator()) trainer.track_state("adalora_allocator", *allocator);
  trainer.track_stream("model.dropout", model.dropout_stream());
  const std::filesystem::path state_path = o.output / kTrainingStateFile;
  if (o.resume) {
    in_context<Error>("--resume from '" + state_path.string() + "'", [&] { load_checkpoint(state_path, trainer); });
    check<ValueError>(!o.stop_after || *o.stop_after > trainer.state().step, "--stop-after ", o.stop_after.value_or(0),
                      ": the resumed run is already at step ", trainer.state().step);
    if (!o.quiet) log << "resuming at step " << trainer.state().step << " of " << total_steps << '\n';
  }
  // Every --save-every steps and after every epoch's evaluation; at --stop-after, saved and stopped.
  Checkpointing saver(trainer, state_path, o.save_every, o.save_every > 0, o.stop_after);
  ConsoleProgress progress(log, o.quiet);
  const auto train_start = Clock::now();
  const TrainResult result = trainer.fit(train, progress, evaluation, history, adalora, saver);
  const double train_seconds = seconds_since(train_start);
  if (result.stopped) {  // by --stop-after: the only callback that stops
    report["stopped_at_step"] = result.steps;
    report["total_steps"] = total_steps;
    report["training_state"] = state_path.string();
    return report;
  }
  check<ValueError>(!history.entries().empty(), "training ended before its first evaluation");
  const double final_metric = shortest_double(history.entries().back().metric);
  double best_metric = final_metric;
  for (const auto& e : history.entries()) best_metric = std::max(best_metric, shortest_double(e.metric));

  // ---- adapter + head in PEFT's layout -------------------------------------
  io::SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  for (const auto& name : sites) Traits::add_tensors(writer, "base_model.model." + name, model.site(name).adapter());
  for (const auto& p : model.parameters()) {
    if (!is_head(p.name)) continue;
    const HostMatrix value = to_host<B>(p.value);
    // PyTorch biases are 1-D; plora keeps them as 1 x n rows.
    std::vector<Index> shape{value.rows(), value.cols()};
    if (value.rows() == 1 && p.name.ends_with(".bias")) shape = {value.cols()};
    writer.add("base_model.model." + p.name, shape, std::span<const float>(value.values()));
  }
  writer.write(o.output / "adapter_model.safetensors");
  nlohmann::ordered_json sidecar = Traits::config(settings, o.targets);
  sidecar["modules_to_save"] = heads;
  sidecar["base_model_name_or_path"] = task.checkpoint();
  sidecar["plora_method"] = Traits::name;
  write_json(o.output / "adapter_config.json", sidecar);

  // ---- report.json ---------------------------------------------------------
  nlohmann::ordered_json site_rows = nlohmann::ordered_json::array();
  std::map<std::string, double> used_ratios;
  for (const auto& name : sites) {
    const auto& site = model.site(name);
    nlohmann::ordered_json row{{"name", name},
                               {"out_features", site.out_features()},
                               {"in_features", site.in_features()},
                               {"trainable", site.adapter().trainable_count()}};
    if (plan) {
      const PlannedMask& planned = plan->at(name);
      used_ratios[name] = planned.ratio;
      row["ratio"] = planned.ratio;
      row["extracted_ratio"] = ratios->report.site(name).ratio;
      if constexpr (requires { site.adapter().kept_rows(); }) {
        row["kept_rows"] = site.adapter().kept_rows().size();
        row["kept_cols"] = site.adapter().kept_cols().size();
        row["rows"] = site.adapter().kept_rows();
        row["cols"] = site.adapter().kept_cols();
      }
    }
    if constexpr (requires { site.adapter().mask(); }) row["density"] = density;
    site_rows.push_back(std::move(row));
  }
  nlohmann::ordered_json history_rows = nlohmann::ordered_json::array();
  for (const auto& e : history.entries())
    history_rows.push_back(
        {{"epoch", e.epoch}, {"train_loss", shortest_double(e.train_loss)}, {metric, shortest_double(e.metric)}});
  report["method"] = Traits::name;
  report["metric"] = metric;
  report[metric] = final_metric;
  report["best_" + metric] = best_metric;
  report["trainable_params"] = {{"adapters", count.adapters}, {"head", count.head}, {"total", count.total()}};
  report["dense_lora_params"] = dense_lora;
  report["total_params"] = task.base_parameters() + count.adapters;
  report["train_seconds"] = train_seconds;  // of this process: a resumed run's part
  if (o.resume) report["resumed"] = true;
  if (ratios) {
    report["ratios"] = {{"origin", ratios->origin},
                        {"extractor", ratios->report.extractor},
                        {"mask", o.mask},
                        {"reference_metric", ratios->report.reference_metric},
                        {"probe_seconds", ratios->probe_seconds},
                        {"extraction_seconds", ratios->extraction_seconds}};
    if (!is_partial(o.adapter)) report["ratios"]["matched_density"] = density;
  }
  if (const auto* allocator = adalora.allocator()) report["adalora_final_budget"] = allocator->target_budget();
  report["history"] = std::move(history_rows);
  report["sites"] = std::move(site_rows);
  report["wall_seconds"] = seconds_since(start);
  report["peak_rss_mib"] = peak_rss_mib();
  write_json(o.output / "report.json", report);

  // ---- pictures --------------------------------------------------------------
  if (plan) {
    std::ostringstream title;
    title << "Sparsity ratio per site (" << ratios->report.extractor << ", mask " << o.mask << ")";
    io::write_file_atomically(o.output / "ratios.svg", ratio_heatmap_svg(title.str(), used_ratios));
  }
  const Index adalora_r = settings.adalora.init_r;
  std::vector<std::string> labels{"full (" + std::to_string(sites.size()) + " weights)",
                                  "lora r=" + std::to_string(o.rank), "adalora r=" + std::to_string(adalora_r)};
  std::vector<double> values{static_cast<double>(full), static_cast<double>(dense_lora),
                             static_cast<double>(dense_lora + adalora_r * static_cast<Index>(sites.size()))};
  const std::vector<std::string_view> listed{"full", "lora", "adalora"};
  const auto at = std::find(listed.begin(), listed.end(), Traits::name);
  if (at == listed.end()) {
    labels.push_back(std::string(Traits::name) + " (this run)");
    values.push_back(static_cast<double>(count.adapters));
  } else {
    labels[static_cast<std::size_t>(at - listed.begin())] += " (this run)";
  }
  io::write_file_atomically(o.output / "params.svg",
                            bar_chart_svg("Trainable adapter parameters (targets: " + std::to_string(sites.size()) +
                                              " weights; head excluded)",
                                          labels, values, "params"));
  return report;
}

/// Runs the whole pipeline for `task` and prints a summary to `log`.
template <Backend B, class Task>
nlohmann::ordered_json run_pipeline(const RunOptions& o, Task& task, nlohmann::ordered_json report,
                                    Clock::time_point start, std::ostream& log) {
  validate(o);
  std::filesystem::create_directories(o.output);
  const std::optional<RatioSource> ratios = obtain_ratios<B>(o, task, log);
  nlohmann::ordered_json config{{"adapter", o.adapter},       {"rank", o.rank},
                                {"alpha", o.alpha},           {"targets", o.targets},
                                {"ratio", nullptr},           {"ratios_file", o.ratios_file.string()},
                                {"ratio_extractor", o.extractor}, {"tau", o.tau},
                                {"resolution", o.resolution}, {"shots", o.shots},
                                {"mask", o.mask},             {"density", nullptr},
                                {"epochs", o.epochs},         {"lr", o.lr},
                                {"batch", o.batch},           {"warmup", o.warmup},
                                {"weight_decay", o.weight_decay}, {"seed", o.seed},
                                {"threads", o.threads}};
  if (o.ratio) config["ratio"] = *o.ratio;
  if (o.density) config["density"] = *o.density;
  report["task"] = task.describe();
  report["config"] = std::move(config);
  report = with_adapter_type<B>(o.adapter, [&]<class A>() {
    return fine_tune<B, A>(o, task, ratios, std::move(report), start, log);
  });
  if (report.contains("stopped_at_step")) {
    log << "stopped after step " << report["stopped_at_step"].get<Index>() << " of "
        << report["total_steps"].get<Index>() << "; training state saved to "
        << report["training_state"].get<std::string>() << " (continue with --resume)\n";
    return report;
  }
  const std::string metric = report["metric"];
  log << report["method"].get<std::string>() << ": " << metric << ' '
      << format_number(report[metric].get<double>(), 4, true) << ", trainable "
      << report["trainable_params"]["adapters"].get<Index>() << " adapter + "
      << report["trainable_params"]["head"].get<Index>() << " head parameters, "
      << format_number(report["wall_seconds"].get<double>(), 1, true) << " s, peak RSS "
      << format_number(report["peak_rss_mib"].get<double>(), 1, true) << " MiB\n";
  log << "report: " << (o.output / "report.json").string() << '\n';
  return report;
}

}  // namespace plora::runner
