#pragma once
// GLUE (TSV, as distributed by gluebenchmark.com) and SuperGLUE COPA / WSC
// (JSONL) readers, their label sets and metrics, and TokenBatches: a
// BatchSource of tokenised, padded batches whose order is a pure function of
// (seed, epoch).
//
// Files are read the way transformers' GLUE processors read them: tab-split
// with no quoting, a header line except in CoLA, label strings mapped in the
// order of the HF `glue` dataset (MNLI: entailment, neutral, contradiction).
// Only labelled splits (train / dev) are supported.
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "plora/core/digest.hpp"
#include "plora/core/error.hpp"
#include "plora/core/rng.hpp"
#include "plora/io/detail/input_file.hpp"
#include "plora/io/tokenizer.hpp"
#include "plora/models/batches.hpp"
#include "plora/train/metrics.hpp"

namespace plora {

enum class GlueTask { Sst2, Cola, Mrpc, Stsb, Qqp, MnliMatched, MnliMismatched, Qnli, Rte, Copa, Wsc };

/// What a task is: its name, whether examples are text pairs, its labels
/// (empty for the STS-B regression) and the metrics GLUE reports for it, the
/// first being the one to optimise.
struct TaskInfo {
  GlueTask task;
  std::string name;
  bool pair;
  std::vector<std::string> labels;
  std::vector<metrics::Metric> metrics;
  [[nodiscard]] Index num_labels() const { return labels.empty() ? 1 : static_cast<Index>(labels.size()); }
  [[nodiscard]] bool regression() const { return labels.empty(); }
};

inline const std::vector<TaskInfo>& glue_tasks() {
  using metrics::Metric;
  static const std::vector<TaskInfo> tasks = {
      {GlueTask::Sst2, "sst2", false, {"0", "1"}, {Metric::Accuracy}},
      {GlueTask::Cola, "cola", false, {"0", "1"}, {Metric::Mcc}},
      {GlueTask::Mrpc, "mrpc", true, {"0", "1"}, {Metric::BinaryF1, Metric::Accuracy}},
      {GlueTask::Stsb, "stsb", true, {}, {Metric::Pearson, Metric::Spearman}},
      {GlueTask::Qqp, "qqp", true, {"0", "1"}, {Metric::BinaryF1, Metric::Accuracy}},
      {GlueTask::MnliMatched, "mnli_matched", true, {"entailment", "neutral", "contradiction"}, {Metric::Accuracy}},
      {GlueTask::MnliMismatched, "mnli_mismatched", true, {"entailment", "neutral", "contradiction"},
       {Metric::Accuracy}},
      {GlueTask::Qnli, "qnli", true, {"entailment", "not_entailment"}, {Metric::Accuracy}},
      {GlueTask::Rte, "rte", true, {"entailment", "not_entailment"}, {Metric::Accuracy}},
      {GlueTask::Copa, "copa", true, {"0", "1"}, {Metric::Accuracy}},
      {GlueTask::Wsc, "wsc", true, {"false", "true"}, {Metric::Accuracy}},
  };
  return tasks;
}

inline const TaskInfo& task_info(GlueTask task) {
  const auto& tasks = glue_tasks();
  return *std::find_if(tasks.begin(), tasks.end(), [&](const TaskInfo& t) { return t.task == task; });
}

/// Parses a task name (case-insensitive; "sst-2", "sts-b", "mnli" = matched, "mnli-mm" accepted).
inline GlueTask parse_glue_task(std::string_view text) {
  std::string name;
  for (const char c : text)
    if (c != '-' && c != '_') name += char(std::tolower(static_cast<unsigned char>(c)));
  if (name == "mnli" || name == "mnlim") return GlueTask::MnliMatched;
  if (name == "mnlimm") return GlueTask::MnliMismatched;
  for (const auto& t : glue_tasks()) {
    std::string canonical;
    for (const char c : t.name)
      if (c != '_') canonical += c;
    if (canonical == name) return t.task;
  }
  std::string known;
  for (const auto& t : glue_tasks()) known += (known.empty() ? "" : ", ") + t.name;
  throw ValueError(detail::concat("unknown GLUE/SuperGLUE task '", text, "'; expected one of ", known));
}

/// One labelled example: text a (and b for pair tasks), a class id, or a
/// regression target for STS-B.
struct TextExample {
  std::string a;
  std::string b;
  std::int32_t label = 0;
  float target = 0.0f;
};

/// Adds the examples (texts, labels, targets, in order) to `digest`.
inline Digest& add_to(Digest& digest, std::span<const TextExample> examples) {
  digest.add(examples.size());
  for (const TextExample& e : examples) digest.add(e.a).add(e.b).add(e.label).add(e.target);
  return digest;
}

/// The file of a split in a task's directory as GLUE / SuperGLUE ship it:
/// `train.tsv`, `dev.tsv` (MNLI: `dev_matched.tsv` / `dev_mismatched.tsv`);
/// SuperGLUE `train.jsonl`, `val.jsonl` ("dev" maps to val).
inline std::filesystem::path glue_split_file(GlueTask task, const std::filesystem::path& directory,
                                             std::string_view split) {
  check<ValueError>(split == "train" || split == "dev", "GLUE split must be 'train' or 'dev', got '", split, "'");
  if (task == GlueTask::Copa || task == GlueTask::Wsc) return directory / (split == "dev" ? "val.jsonl" : "train.jsonl");
  if (split == "dev" && task == GlueTask::MnliMatched) return directory / "dev_matched.tsv";
  if (split == "dev" && task == GlueTask::MnliMismatched) return directory / "dev_mismatched.tsv";
  return directory / (std::string(split) + ".tsv");
}

namespace detail {
inline constexpr std::size_t kLastColumn = ~std::size_t{0};

struct Columns {
  std::size_t a;
  std::size_t b;  // ignored for single-text tasks
  std::size_t label;  // kLastColumn: the last column, whatever the count
  std::size_t min_count;
  bool header;
};

// Column layout of each GLUE TSV.
inline Columns glue_columns(GlueTask task) {
  switch (task) {
    case GlueTask::Sst2: return {0, 0, 1, 2, true};
    case GlueTask::Cola: return {3, 0, 1, 4, false};
    case GlueTask::Mrpc: return {3, 4, 0, 5, true};
    case GlueTask::Stsb: return {7, 8, kLastColumn, 10, true};
    case GlueTask::Qqp: return {3, 4, 5, 6, true};
    case GlueTask::MnliMatched:
    case GlueTask::MnliMismatched: return {8, 9, kLastColumn, 12, true};  // gold_label
    case GlueTask::Qnli:
    case GlueTask::Rte: return {1, 2, 3, 4, true};
    default: break;
  }
  throw ValueError("glue_columns: task " + task_info(task).name + " is not a TSV task");
}

inline std::vector<std::string_view> split_tabs(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (std::size_t tab; (tab = line.find('\t', start)) != std::string_view::npos; start = tab + 1)
    out.push_back(line.substr(start, tab - start));
  out.push_back(line.substr(start));
  return out;
}

inline std::int32_t label_id(const TaskInfo& info, std::string_view text, const std::filesystem::path& file,
                             Index line) {
  const auto it = std::find(info.labels.begin(), info.labels.end(), text);
  if (it != info.labels.end()) return static_cast<std::int32_t>(it - info.labels.begin());
  std::string known;
  for (const auto& l : info.labels) known += (known.empty() ? "'" : ", '") + l + "'";
  throw IoError(concat(file.string(), ":", line, ": label '", text, "' is not one of ", info.name, "'s labels ",
                       known));
}

/// An STS-B similarity score: a number on the task's 0-5 scale (stof would
/// also take "nan" and "inf").
inline float parse_score(std::string_view text, const std::filesystem::path& file, Index line) {
  float value = 0.0f;
  std::size_t used = 0;
  try {
    value = std::stof(std::string(text), &used);
  } catch (const std::exception&) {
    used = 0;  // no number at all, or out of float's range
  }
  check<IoError>(used > 0 && used == text.size(), file.string(), ":", line, ": similarity score '", text,
                 "' is not a number");
  check<IoError>(value >= 0.0f && value <= 5.0f, file.string(), ":", line, ": similarity score '", text,
                 "' is outside STS-B's scale [0, 5]");
  return value;
}

inline std::vector<TextExample> read_glue_tsv(const TaskInfo& info, const std::filesystem::path& file) {
  std::ifstream in = io::detail::open_input_file(file, info.name + " file");
  const Columns cols = glue_columns(info.task);
  std::vector<TextExample> examples;
  std::string raw;
  for (Index line = 1; std::getline(in, raw); ++line) {
    std::string_view text(raw);
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    if (line == 1 && text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);  // MRPC ships a BOM
    if ((line == 1 && cols.header) || text.empty()) continue;
    const auto fields = split_tabs(text);
    check<IoError>(fields.size() >= cols.min_count, file.string(), ":", line, ": expected at least ", cols.min_count,
                   " tab-separated columns for ", info.name, ", got ", fields.size());
    const std::string_view label = cols.label == kLastColumn ? fields.back() : fields[cols.label];
    TextExample ex;
    ex.a = std::string(fields[cols.a]);
    if (info.pair) ex.b = std::string(fields[cols.b]);
    if (info.regression()) {
      ex.target = parse_score(label, file, line);
    } else {
      ex.label = label_id(info, label, file, line);
    }
    examples.push_back(std::move(ex));
  }
  return examples;
}

// SuperGLUE as a sequence-pair classification (our choice, the model has one
// classifier head): COPA a = premise + the question, b = "choice1 | choice2",
// label = the right choice; WSC a = text, b = "<pronoun> refers to <noun>".
inline std::vector<TextExample> read_superglue_jsonl(const TaskInfo& info, const std::filesystem::path& file) {
  std::ifstream in = io::detail::open_input_file(file, info.name + " file");
  std::vector<TextExample> examples;
  std::string raw;
  for (Index line = 1; std::getline(in, raw); ++line) {
    if (raw.find_first_not_of(" \t\r") == std::string::npos) continue;
    TextExample ex;
    try {
      const auto j = nlohmann::json::parse(raw);
      if (info.task == GlueTask::Copa) {
        const auto question = j.at("question").get<std::string>();
        check<IoError>(question == "cause" || question == "effect", "question must be 'cause' or 'effect', got '",
                       question, "'");
        ex.a = j.at("premise").get<std::string>() +
               (question == "cause" ? " What was the cause?" : " What happened as a result?");
        ex.b = j.at("choice1").get<std::string>() + " | " + j.at("choice2").get<std::string>();
        // The label's exact text: a float, a bool or a number beyond int must not be truncated into 0 / 1.
        const auto& label = j.at("label");
        check<IoError>(label.is_number_integer(), "label ", label.dump(), " is not an integer");
        ex.label = label_id(info, label.dump(), file, line);
      } else {
        const auto& target = j.at("target");
        ex.a = j.at("text").get<std::string>();
        ex.b = target.at("span2_text").get<std::string>() + " refers to " + target.at("span1_text").get<std::string>();
        ex.label = j.at("label").get<bool>() ? 1 : 0;
      }
    } catch (const nlohmann::json::exception& e) {
      throw IoError(concat(file.string(), ":", line, ": malformed ", info.name, " record: ", e.what()));
    } catch (const IoError& e) {
      const std::string what = e.what();
      throw IoError(what.starts_with(file.string()) ? what : concat(file.string(), ":", line, ": ", what));
    }
    examples.push_back(std::move(ex));
  }
  return examples;
}
}  // namespace detail

/// Reads a labelled GLUE TSV or SuperGLUE JSONL file. Malformed lines and
/// labels outside the task's set throw IoError naming the file and line, and
/// so does a file without examples.
inline std::vector<TextExample> read_glue(GlueTask task, const std::filesystem::path& file) {
  const TaskInfo& info = task_info(task);
  std::vector<TextExample> examples = task == GlueTask::Copa || task == GlueTask::Wsc
                                          ? detail::read_superglue_jsonl(info, file)
                                          : detail::read_glue_tsv(info, file);
  check<IoError>(!examples.empty(), info.name, " file '", file.string(), "' holds no examples");
  return examples;
}

/// Tokenised, padded batches of text examples: a BatchSource. With `shuffle`,
/// epoch e visits the examples in a permutation drawn from stream (seed, e), so
/// batch(e, i) does not depend on which batches were asked for before. The
/// last batch may be smaller; each batch is padded to its longest sequence.
class TokenBatches {
 public:
  using Batch = TokenBatch;

  TokenBatches(DebertaV2Tokenizer tokenizer, std::vector<TextExample> examples, bool pair, Index batch_size,
               Index max_length, bool shuffle, std::uint64_t seed = 0)
      : tokenizer_(std::move(tokenizer)),
        examples_(std::move(examples)),
        pair_(pair),
        batch_size_(batch_size),
        max_length_(max_length),
        shuffle_(shuffle),
        seed_(seed),
        cache_(std::make_shared<Cache>()) {
    check<ValueError>(batch_size_ >= 1, "TokenBatches: batch_size must be >= 1, got ", batch_size_);
    check<ValueError>(!examples_.empty(), "TokenBatches: no examples");
  }

  [[nodiscard]] Index size() const { return static_cast<Index>(examples_.size()); }
  [[nodiscard]] Index batches_per_epoch() const { return batch_count(size(), batch_size_); }
  [[nodiscard]] const std::vector<TextExample>& examples() const { return examples_; }

  [[nodiscard]] TokenBatch batch(Index epoch, Index i) const {
    check<ValueError>(i >= 0 && i < batches_per_epoch(), "TokenBatches: batch ", i, " out of range [0, ",
                      batches_per_epoch(), ")");
    const Index first = i * batch_size_;
    const std::vector<std::size_t> members = slice(epoch, first, std::min(batch_size_, size() - first));
    std::vector<std::string> a, b;
    TokenBatch out;
    for (const std::size_t m : members) {
      const TextExample& ex = examples_[m];
      a.push_back(ex.a);
      if (pair_) b.push_back(ex.b);
      out.labels.push_back(ex.label);
      out.targets.push_back(ex.target);
    }
    TokenBatch tokens = tokenizer_.encode_batch(a, b, max_length_);
    tokens.labels = std::move(out.labels);
    tokens.targets = std::move(out.targets);
    return tokens;
  }

 private:
  // The permutation of the last epoch asked for, shared by copies (guarded).
  struct Cache {
    std::mutex mutex;
    Index epoch = -1;
    std::vector<std::size_t> order;
  };

  /// Entries [first, first + count) of epoch `epoch`'s visiting order.
  std::vector<std::size_t> slice(Index epoch, Index first, Index count) const {
    std::lock_guard lock(cache_->mutex);
    if (cache_->epoch != epoch || cache_->order.size() != examples_.size()) {
      auto& order = cache_->order;
      order.resize(examples_.size());
      std::iota(order.begin(), order.end(), std::size_t{0});
      if (shuffle_) {  // Fisher-Yates
        RandomStream rng(seed_, stream_id("TokenBatches") + static_cast<std::uint64_t>(epoch));
        for (std::size_t k = order.size(); k > 1; --k)
          std::swap(order[k - 1], order[rng.below(static_cast<std::uint32_t>(k))]);
      }
      cache_->epoch = epoch;
    }
    const auto begin = cache_->order.begin() + std::ptrdiff_t(first);
    return {begin, begin + std::ptrdiff_t(count)};
  }

  DebertaV2Tokenizer tokenizer_;
  std::vector<TextExample> examples_;
  bool pair_;
  Index batch_size_;
  Index max_length_;
  bool shuffle_;
  std::uint64_t seed_;
  std::shared_ptr<Cache> cache_;
};

}  // namespace plora
